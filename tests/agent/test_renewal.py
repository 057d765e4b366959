"""Renewal by ``kms-pki agent`` (DESIGN.md 10; issue 14, must show 3): a short-lived certificate is renewed
before it expires, ``on-renewal`` runs once, and a reader looking at the files all along never sees a key
and a certificate that do not match; the renewal moment defaults to two thirds of the lifetime, spread
by jitter; a renewal made on the server (``renewedByCertificateId``) is followed, with no request of
the agent's own."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime
from pathlib import Path

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.agent.conftest import (
    CERTIFICATES,
    AgentPki,
    hook_runs,
    leaf,
    pair_matches,
    requests_of,
    run_once,
    serial_of,
    write_config,
)

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


class PairReader(threading.Thread):
    """Reads key, certificate and key again through the output paths, as fast as it can. When both key
    reads agree, the filesystem showed that key for the whole look, so the certificate read in between
    must be its certificate: a look that saw a key swapped under it proves nothing and is only counted."""

    def __init__(self, key: Path, cert: Path) -> None:
        super().__init__(daemon=True)
        self.key, self.cert = key, cert
        self.stopped = threading.Event()
        self.looks = self.straddled = self.absent = 0
        self.mismatches: list[str] = []
        self.serials: list[int] = []
        self._judged: dict[tuple[bytes, bytes], bool] = {}

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                k1, c, k2 = self.key.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
            except FileNotFoundError:
                self.absent += 1
                continue
            self.looks += 1
            if k1 != k2:
                self.straddled += 1
                continue
            pair = (hashlib.sha256(k1).digest(), hashlib.sha256(c).digest())
            if pair not in self._judged:
                self._judged[pair] = self._matches(k1, c)
            if not self._judged[pair]:
                self.mismatches.append(f"look {self.looks}: key {pair[0].hex()[:12]}, certificate {pair[1].hex()[:12]}")

    def _matches(self, key_pem: bytes, cert_pem: bytes) -> bool:
        try:
            key = serialization.load_pem_private_key(key_pem, None)
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:  # half a file
            return False
        if not self.serials or self.serials[-1] != cert.serial_number:
            self.serials.append(cert.serial_number)
        return bool(key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
                    == cert.public_key().public_bytes(serialization.Encoding.DER, SPKI))


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_a_short_lived_certificate_is_renewed_before_expiry_with_on_renewal_once_and_the_pair_always_matching(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    # 40 s to live, renewed 25 s (+ up to 2.5 s of jitter) before the end: about 13 s after issuance.
    config = write_config(agent_pki, tmp_path, ttl="40s", renew_before="25s")
    key, cert = tmp_path / "private" / "key.pem", tmp_path / "out" / "cert.pem"
    reader = PairReader(key, cert)
    reader.start()
    agent = start_agent(config)
    try:
        await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
        first = leaf(cert)
        await agent.until(lambda: serial_of(cert) != first.serial_number, timeout=40, what="the renewal")
        renewed_at = time.time()
        checks = agent.count("status checked")
        await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    finally:
        reader.stopped.set()
        reader.join(10)
    assert renewed_at < first.not_valid_after_utc.timestamp(), "renewed only after the certificate had expired"
    assert reader.mismatches == [], reader.mismatches[:5]
    assert reader.looks > 1000, reader.looks  # the reader really was looking all along
    assert reader.serials == [first.serial_number, serial_of(cert)]
    assert pair_matches(key, cert)
    runs = hook_runs(tmp_path)
    assert [(run[0], int(run[1], 16)) for run in runs] == [("issuance", first.serial_number),
                                                           ("renewal", serial_of(cert))]
    assert await requests_of(db, agent_pki) == 2
    # Renewed through POST /renew, so the service links the two (DESIGN.md 5.6).
    renewed_from = await db.fetchval("SELECT renewed_from_id::text FROM certificates WHERE project_id = $1::uuid "
                                     "ORDER BY created_at DESC LIMIT 1", agent_pki.project_id)
    assert renewed_from is not None


async def test_without_renew_before_expiry_the_renewal_falls_two_thirds_into_the_lifetime_with_jitter(
        agent_pki: AgentPki, tmp_path: Path) -> None:
    offsets = []
    for n in range(4):
        folder = tmp_path / f"host-{n}"
        config = write_config(agent_pki, folder, name=f"host{n}.example.test", ttl="30d")
        assert run_once(config).returncode == 0
        meta = json.loads((folder / "private" / ".key.pem.kms-agent" / "current" / "meta.json").read_text())
        start, not_after = moment(meta["writtenAt"]), moment(meta["notAfter"])
        lifetime = not_after - start
        before_end = not_after - meta["renewAt"]
        # A third of the lifetime before the end, plus up to a tenth of that (the jitter); 2 s of slack
        # for writtenAt's whole seconds.
        assert lifetime / 3 - 2 <= before_end <= lifetime / 3 * 1.1 + 2, (lifetime, before_end)
        offsets.append(before_end)
    assert len(set(round(o) for o in offsets)) > 1, offsets  # a fleet does not renew in one second


async def test_a_renewal_made_on_the_server_is_followed_with_no_request_of_the_agents_own(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    cert, key = tmp_path / "out" / "cert.pem", tmp_path / "private" / "key.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    meta = json.loads((tmp_path / "private" / ".key.pem.kms-agent" / "current" / "meta.json").read_text())
    # An operator (or the server's own scheduled renewal) renews it.
    r = await agent_pki.admin.post(f"{CERTIFICATES}/{meta['certificateId']}/renew", {}, params={"wait": "10"})
    assert r.status == 200, r.body
    successor = r.body
    await agent.until(lambda: serial_of(cert) == int(successor["serialNumber"].replace(":", ""), 16),
                      what="the successor on disk")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    assert key.read_text() == successor["privateKey"]
    assert pair_matches(key, cert)
    assert agent.count("following a renewal made on the server") == 1
    assert agent.count("renewal requested") == 0
    assert await requests_of(db, agent_pki) == 2  # the first issuance and the operator's renewal
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "renewal"]
