"""State kept beside the outputs (DESIGN.md 10; issue 14, must show 2): a restart requests nothing while
the certificate on disk is valid and made for the config (upstream's agent issues again on every
start), not even when it was stopped while a request was on its way; a changed config (names, key
algorithm, profile) issues exactly once more."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from cryptography import x509

from tests.agent.conftest import (
    PROFILES,
    Agent,
    AgentPki,
    hook_runs,
    leaf,
    log_lines,
    pair_matches,
    requests_of,
    run_once,
    serial_of,
    write_config,
)

CERT = Path("out") / "cert.pem"


async def started_and_settled(start_agent: Callable[..., Agent], config: Path, folder: Path) -> Agent:
    """An agent that has a certificate on disk and has since looked at its status twice."""
    agent = start_agent(config)
    await agent.until(lambda: (folder / CERT).exists() and hook_runs(folder), what="a certificate and its hook")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    return agent


async def test_restart_requests_nothing_while_the_certificate_on_disk_is_valid(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    first = await started_and_settled(start_agent, config, tmp_path)
    assert first.stop() == 0
    serial = serial_of(tmp_path / CERT)
    assert await requests_of(db, agent_pki) == 1
    second = await started_and_settled(start_agent, config, tmp_path)
    assert second.count("certificate requested") == 0
    assert await requests_of(db, agent_pki) == 1
    assert serial_of(tmp_path / CERT) == serial
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]  # no hook without a change
    second.stop()
    assert run_once(config).returncode == 0
    assert await requests_of(db, agent_pki) == 1


async def test_changed_alt_names_issue_exactly_one_new_certificate(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    (await started_and_settled(start_agent, config, tmp_path)).stop()
    old = serial_of(tmp_path / CERT)
    write_config(agent_pki, tmp_path, alt_names=["web.example.test", "www.example.test"])
    agent = start_agent(config)
    await agent.until(lambda: serial_of(tmp_path / CERT) != old, what="a certificate with the new names")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two status checks")
    assert await requests_of(db, agent_pki) == 2
    san = leaf(tmp_path / CERT).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["web.example.test", "www.example.test"]
    assert pair_matches(tmp_path / "private" / "key.pem", tmp_path / CERT)
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "issuance"]


async def test_changed_key_algorithm_issues_again_and_keeps_key_and_certificate_a_pair(
        agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, key_algorithm="EC_prime256v1")
    assert run_once(config).returncode == 0
    assert run_once(config).returncode == 0
    assert await requests_of(db, agent_pki) == 1
    write_config(agent_pki, tmp_path, key_algorithm="EC_secp384r1")
    assert run_once(config).returncode == 0
    assert await requests_of(db, agent_pki) == 2
    assert leaf(tmp_path / CERT).public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert pair_matches(tmp_path / "private" / "key.pem", tmp_path / CERT)


async def test_changed_profile_issues_again(agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path)
    assert run_once(config).returncode == 0
    r = await agent_pki.admin.post(PROFILES, {
        "projectId": agent_pki.project_id, "slug": "web-two", "issuerType": "ca", "caId": agent_pki.issuing_id,
        "certificatePolicyId": agent_pki.policy_id, "enrollmentType": "api", "apiConfig": {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1"}})
    assert r.status == 201, r.body
    agent_pki.profile_slug = "web-two"
    write_config(agent_pki, tmp_path)
    assert run_once(config).returncode == 0
    assert await requests_of(db, agent_pki) == 2
    newest = await db.fetchval("SELECT profile_id::text FROM certificates WHERE project_id = $1::uuid"
                               " ORDER BY created_at DESC LIMIT 1", agent_pki.project_id)
    assert newest == r.body["certificateProfile"]["id"]


async def test_changed_file_permission_is_applied_without_a_new_certificate(
        agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, modes={"private-key": "0600"})
    assert run_once(config).returncode == 0
    write_config(agent_pki, tmp_path, modes={"private-key": "0640"})
    assert run_once(config).returncode == 0
    assert (tmp_path / "private" / "key.pem").stat().st_mode & 0o777 == 0o640
    assert await requests_of(db, agent_pki) == 1


async def test_an_agent_killed_while_its_request_waits_for_a_worker_takes_that_request_after_restart(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection, api_without_broker: str,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    # Through an API whose broker is unreachable the request is stored but no worker hears of it.
    config = write_config(agent_pki, tmp_path, address=api_without_broker)
    first = start_agent(config)
    await first.until(lambda: first.count("certificate requested") == 1, what="the request")
    request_id = next(line["certificateRequestId"] for line in first.logs()
                      if line["message"] == "certificate requested")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    await ring_doorbell(request_id)
    write_config(agent_pki, tmp_path)  # the same config, through the session's API
    second = start_agent(config)
    await second.until(lambda: (tmp_path / CERT).exists() and hook_runs(tmp_path), what="the certificate")
    assert second.count("certificate requested") == 0
    assert any(line.get("certificateRequestId") == request_id for line in second.logs()
               if line["message"] == "waiting for the certificate request sent earlier")
    assert await requests_of(db, agent_pki) == 1
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]


async def test_files_another_agent_wrote_are_replaced_by_links_on_the_first_run_and_said_so(
        agent_pki: AgentPki, tmp_path: Path) -> None:
    # As the upstream agent leaves a host: plain files at the configured paths.
    for path in (tmp_path / "private" / "key.pem", tmp_path / CERT, tmp_path / "out" / "chain.pem"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("written by the upstream agent\n")
    config = write_config(agent_pki, tmp_path)
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / CERT).is_symlink() and pair_matches(tmp_path / "private" / "key.pem", tmp_path / CERT)
    said = [line for line in log_lines(done.stderr) if line.get("replaced")]
    assert len(said) == 1 and len(said[0]["replaced"]) == 3, said
