"""A renewal the server schedules itself (DESIGN.md 7: a profile with ``apiConfig.autoRenew``, renewed by
``kms-pki beat``) is picked up by the agent from ``renewedByCertificateId`` and written, with
``on-renewal`` once and no renewal request of the agent's own. The beat here scans every second; the
test brings the certificate's due date forward in the database, as time would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.agent.conftest import PROFILES, AgentPki, hook_runs, pair_matches, requests_of, serial_of, write_config
from tests.stack import Stack


@pytest.fixture(scope="module")
def beat(worker: Stack) -> Iterator[Stack]:
    worker.start_beat(env={"KMS_RENEWAL_INTERVAL_SECONDS": "1"})
    try:
        yield worker
    finally:
        worker.stop("beat")


async def test_a_renewal_the_beat_made_is_followed_and_written_with_on_renewal_once(
        agent_pki: AgentPki, beat: Stack, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    r = await agent_pki.admin.patch(f"{PROFILES}/{agent_pki.profile_id}",
                                    {"apiConfig": {"autoRenew": True, "renewBeforeDays": 1}})
    assert r.status == 200, r.body
    config = write_config(agent_pki, tmp_path, ttl="3d")
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    first = serial_of(cert)
    meta = json.loads((tmp_path / "private" / ".key.pem.kms-agent" / "current" / "meta.json").read_text())
    await db.execute("UPDATE certificates SET renewal_due_at = now() - interval '1 second' WHERE id = $1::uuid",
                     meta["certificateId"])
    await agent.until(lambda: serial_of(cert) != first, timeout=60, what="the server's renewal on disk")
    renewed = await db.fetchrow("SELECT id::text, renewed_from_id::text FROM certificates WHERE renewed_from_id = "
                                "$1::uuid", meta["certificateId"])
    assert renewed is not None
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    current = json.loads((tmp_path / "private" / ".key.pem.kms-agent" / "current" / "meta.json").read_text())
    assert current["certificateId"] == renewed["id"]
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert agent.count("renewal requested") == 0
    assert await requests_of(db, agent_pki) == 2
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "renewal"]
