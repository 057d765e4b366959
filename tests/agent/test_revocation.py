"""Revocation noticed by ``kms-pki agent`` (DESIGN.md 10; issue 14, must show 3): at its next status check
it runs ``on-failure`` (once, with the reason), then replaces the certificate with a new one when the
profile allows (a revoked certificate is never renewed, DESIGN.md 7); when the profile refuses, the
revoked files stay where they are, the refusal is retried a bounded number of times, and the hook does
not run again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from tests.agent.conftest import (
    CERTIFICATES,
    AgentPki,
    hook_runs,
    make_csr,
    pair_matches,
    requests_of,
    serial_of,
    write_config,
)

CA = "/api/v1/cert-manager/ca/internal"


def current_meta(folder: Path) -> dict[str, str]:
    meta: dict[str, str] = json.loads((folder / "private" / ".key.pem.kms-agent" / "current" / "meta.json").read_text())
    return meta


async def revoke(pki: AgentPki, certificate_id: str, reason: str = "KEY_COMPROMISE") -> None:
    r = await pki.admin.post(f"{CERTIFICATES}/{certificate_id}/revoke", {"revocationReason": reason})
    assert r.status == 200, r.body


async def test_a_revoked_certificate_runs_on_failure_once_and_is_replaced(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    first, first_id = serial_of(cert), current_meta(tmp_path)["certificateId"]
    await revoke(agent_pki, first_id)
    await agent.until(lambda: serial_of(cert) != first, what="the replacement")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    runs = hook_runs(tmp_path)
    assert [run[0] for run in runs] == ["issuance", "failure", "renewal"], runs
    assert int(runs[1][1], 16) == first and runs[1][2:4] == ["revoked:", "the"], runs  # the revoked one, and why
    assert "KEY_COMPROMISE" in " ".join(runs[1]), runs
    assert int(runs[2][1], 16) == serial_of(cert)
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert await requests_of(db, agent_pki) == 2
    status = await db.fetchval("SELECT revoked_at IS NULL FROM certificates WHERE id = $1::uuid",
                               current_meta(tmp_path)["certificateId"])
    assert status is True


async def test_a_revoked_certificate_the_profile_will_not_replace_keeps_its_files_and_runs_on_failure_once(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, failure_retry="1s", max_failure_retries=2)
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    first = serial_of(cert)
    r = await agent_pki.admin.patch(f"{CA}/{agent_pki.issuing_id}", {"status": "disabled"})
    assert r.status == 200, r.body
    await revoke(agent_pki, current_meta(tmp_path)["certificateId"], "CESSATION_OF_OPERATION")
    await agent.until(lambda: agent.count("giving up on this certificate until the agent restarts or its config "
                                          "changes") == 1, what="the agent giving up")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    assert serial_of(cert) == first
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "failure"]
    attempts = [line for line in agent.logs() if line.get("attempt")]
    assert [line["attempt"] for line in attempts] == [1, 2], attempts
    assert all("disabled" in line["message"] for line in attempts), attempts
    # Refused (by the worker, or by the API once its profile cache has seen the CA disabled): no new certificate.
    assert await db.fetchval("SELECT count(*) FROM certificates WHERE project_id = $1::uuid", agent_pki.project_id) == 1


async def test_a_revoked_csr_certificate_past_its_renewal_moment_is_looked_at_once_per_status_check(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    csr, _ = make_csr(tmp_path / "csr", "csr-revoked.example.test")
    # Revoked, then due for renewal 10 s after issuance (renew-before 50 s of 60 s): not re-submitted. (Due
    # at 3 s, a loaded machine sometimes revoked it only after the agent had renewed it.)
    config = write_config(agent_pki, tmp_path, name="csr-revoked.example.test", csr_path=csr, ttl="60s",
                          renew_before="50s", status_check="1s")
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the certificate")
    meta = json.loads((tmp_path / "out" / ".cert.pem.kms-agent" / "current" / "meta.json").read_text())
    await revoke(agent_pki, meta["certificateId"], "SUPERSEDED")
    await agent.until(lambda: len(hook_runs(tmp_path)) == 2, what="on-failure")
    checks = agent.count("status checked")
    await asyncio.sleep(5)
    assert agent.count("status checked") - checks <= 7  # about one a second, not a busy loop
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "failure"]
    assert await requests_of(db, agent_pki) == 1


async def test_a_certificate_deleted_on_the_server_is_replaced_by_a_new_one(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    first = serial_of(cert)
    r = await agent_pki.admin.delete(f"{CERTIFICATES}/{current_meta(tmp_path)['certificateId']}")
    assert r.status == 200, r.body
    await agent.until(lambda: serial_of(cert) != first and len(hook_runs(tmp_path)) == 2, what="the replacement")
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "renewal"]
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert await requests_of(db, agent_pki) == 2
