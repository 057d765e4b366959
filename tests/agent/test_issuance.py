"""Issuance by ``kms-pki agent`` from upstream's v1 and v2 configs, with a server-made key and with a CSR,
and in ``certificate-id`` mode (DESIGN.md 10; issue 14, must show 1): the files appear with their
configured permissions, the chain honours ``omit-root``, ``on-issuance`` runs once. Some run the agent
as a daemon, some with ``--once`` (exit 0)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import serialization

from tests.agent.conftest import (
    Agent,
    AgentPki,
    hook_runs,
    leaf,
    log_lines,
    make_csr,
    mode_of,
    pair_matches,
    requests_of,
    run_once,
    write_config,
)
from tests.compat.wire import fingerprints
from tests.issuance.issuing import issued, server_key_attributes

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def public_key_of(path: Path) -> bytes:
    return leaf(path).public_key().public_bytes(serialization.Encoding.DER, SPKI)


async def test_v1_server_key_files_appear_with_their_modes_a_chain_without_root_and_on_issuance_once(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, version="v1", modes={"private-key": "0640", "certificate": "0644",
                                                                    "chain": "0604"})
    agent: Agent = start_agent(config)
    key, cert, chain = tmp_path / "private" / "key.pem", tmp_path / "out" / "cert.pem", tmp_path / "out" / "chain.pem"
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the certificate and its hook")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two more status checks")
    assert (mode_of(key), mode_of(cert), mode_of(chain)) == (0o640, 0o644, 0o604)
    assert pair_matches(key, cert)
    assert leaf(cert).subject.rfc4514_string() == "CN=web.example.test"
    assert fingerprints(chain.read_text()) == fingerprints(agent_pki.issuing_pem)  # the root left out
    assert await requests_of(db, agent_pki) == 1
    assert [(run[0], int(run[1], 16)) for run in hook_runs(tmp_path)] == [("issuance", leaf(cert).serial_number)]


async def test_v2_server_key_with_omit_root_false_writes_the_whole_chain_and_once_exits_0(
        agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, version="v2", name="v2.example.test", omit_root=False)
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    cert, chain = tmp_path / "out" / "cert.pem", tmp_path / "out" / "chain.pem"
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert leaf(cert).subject.rfc4514_string() == "CN=v2.example.test"
    assert fingerprints(chain.read_text()) == [*fingerprints(agent_pki.issuing_pem), *fingerprints(agent_pki.root_pem)]
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]
    assert await requests_of(db, agent_pki) == 1
    # The v2 config reaches the profile through its application, as upstream's agent does.
    assert any(line.get("certificateRequestId") for line in log_lines(done.stderr))


async def test_v1_csr_mode_writes_a_certificate_for_the_csrs_key_and_never_a_key_file(
        agent_pki: AgentPki, tmp_path: Path) -> None:
    csr, key = make_csr(tmp_path / "csr", "csr.example.test")
    config = write_config(agent_pki, tmp_path, version="v1", name="csr.example.test", csr_path=csr,
                          modes={"certificate": "0640", "chain": "0640"})
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    cert, chain = tmp_path / "out" / "cert.pem", tmp_path / "out" / "chain.pem"
    assert public_key_of(cert) == key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
    assert (mode_of(cert), mode_of(chain)) == (0o640, 0o640)
    assert fingerprints(chain.read_text()) == fingerprints(agent_pki.issuing_pem)
    assert not (tmp_path / "private").exists()
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]


async def test_v2_csr_mode_as_a_daemon_issues_once_and_runs_on_issuance_once(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    csr, key = make_csr(tmp_path / "csr", "csr2.example.test")
    config = write_config(agent_pki, tmp_path, version="v2", name="csr2.example.test", csr_path=csr)
    agent: Agent = start_agent(config)
    cert = tmp_path / "out" / "cert.pem"
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the certificate and its hook")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two more status checks")
    assert public_key_of(cert) == key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
    assert await requests_of(db, agent_pki) == 1
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]


async def test_certificate_id_mode_writes_the_named_certificate_and_its_key_without_a_request(
        agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection) -> None:
    existing = await issued(agent_pki.admin, agent_pki.profile_id,
                            attributes=server_key_attributes("byid.example.test", ttl="30d"))
    config = write_config(agent_pki, tmp_path, certificate_id=existing["certificateId"])
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    cert = tmp_path / "out" / "cert.pem"
    assert fingerprints(cert.read_text()) == fingerprints(existing["certificate"])
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert (tmp_path / "private" / "key.pem").read_text() == existing["privateKey"]
    assert await requests_of(db, agent_pki) == 1  # the one made above; the agent only read it
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]


async def test_output_paths_are_links_into_one_version_folder_beside_the_key(agent_pki: AgentPki,
                                                                             tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path)
    assert run_once(config).returncode == 0
    key, cert, chain = tmp_path / "private" / "key.pem", tmp_path / "out" / "cert.pem", tmp_path / "out" / "chain.pem"
    store = tmp_path / "private" / ".key.pem.kms-agent"
    assert all(p.is_symlink() for p in (key, cert, chain))
    assert {Path(os.path.realpath(p)).parent for p in (key, cert, chain)} == {Path(os.path.realpath(store / "current"))}
    assert mode_of(store / "state.json") == 0o600
