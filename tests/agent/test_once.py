"""``kms-pki agent --once`` (issue 14): one pass over the certificates, then an exit code a cron job or
a deployment script can act on, with the reason in the JSON log: 0 all good, 2 the config, 3 the
identity, 4 the API unreachable, 5 a request refused or failed, 6 revoked or expired and not
replaced, 7 still pending."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.agent.conftest import (
    CERTIFICATES,
    AgentPki,
    hook_runs,
    log_lines,
    make_csr,
    requests_of,
    run_once,
    write_config,
)


def final(stderr: str) -> dict[str, object]:
    """The line that says why the run exits as it does."""
    return next(line for line in reversed(log_lines(stderr)) if "exitCode" in line and line["message"] != "agent done")


def test_once_with_a_v1_config_naming_an_application_exits_2_with_upstreams_message(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("version: v1\ninfisical: {address: http://127.0.0.1:1}\ncertificates:\n"
                      "  - application-name: app\n    profile-name: web\n"
                      "    file-output: {certificate: {path: /tmp/x.pem}, private-key: {path: /tmp/x.key}}\n")
    done = run_once(config)
    assert done.returncode == 2, done.stderr
    assert "certificate 1 (version v1): 'application-name' is not supported" in final(done.stderr)["message"]


def test_once_with_a_config_without_version_exits_2_asking_for_one(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("certificates:\n  - certificate-id: 0b1e2c3d-0000-4000-8000-000000000000\n")
    done = run_once(config)
    assert done.returncode == 2, done.stderr
    assert "add 'version: v2' to your config" in final(done.stderr)["message"]


async def test_once_with_a_wrong_client_secret_exits_3_and_never_logs_the_secret(agent_pki: AgentPki,
                                                                                tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path)
    (tmp_path / "client-secret").write_text("kms_cs_not-the-secret\n")
    done = run_once(config)
    assert done.returncode == 3, done.stderr
    assert "refused" in str(final(done.stderr)["message"]) and "401" in str(final(done.stderr)["message"])
    assert "kms_cs_not-the-secret" not in done.stderr
    assert not (tmp_path / "out" / "cert.pem").exists()


async def test_once_against_an_unreachable_api_exits_4_after_its_retries(agent_pki: AgentPki, tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path, address="http://127.0.0.1:1",
                          retry={"base-delay": "100ms", "max-delay": "200ms", "max-retries": 2})
    done = run_once(config)
    assert done.returncode == 4, done.stderr
    tries = [line for line in log_lines(done.stderr) if line["message"] == "the API cannot be reached; trying again"]
    assert [line["attempt"] for line in tries] == [1, 2]
    assert "cannot reach http://127.0.0.1:1" in str(final(done.stderr)["error"])


async def test_once_for_names_the_policy_refuses_exits_5_with_the_apis_reason_and_on_failure_runs_once(
        agent_pki: AgentPki, tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path, name="web.other.org")
    for _ in range(2):
        done = run_once(config)
        assert done.returncode == 5, done.stderr
        assert "web.other.org" in str(final(done.stderr)["message"]), final(done.stderr)
    assert [run[0] for run in hook_runs(tmp_path)] == ["failure"]  # one failure, however often it is retried


async def test_once_for_a_revoked_csr_certificate_exits_6_and_on_failure_runs_once(agent_pki: AgentPki,
                                                                                  tmp_path: Path) -> None:
    csr, _ = make_csr(tmp_path / "csr", "revoked.example.test")
    config = write_config(agent_pki, tmp_path, name="revoked.example.test", csr_path=csr)
    assert run_once(config).returncode == 0
    meta = tmp_path / "out" / ".cert.pem.kms-agent" / "current" / "meta.json"
    certificate_id = json.loads(meta.read_text())["certificateId"]
    r = await agent_pki.admin.post(f"{CERTIFICATES}/{certificate_id}/revoke", {"revocationReason": "SUPERSEDED"})
    assert r.status == 200, r.body
    for _ in range(2):
        done = run_once(config)
        assert done.returncode == 6, done.stderr
        assert "revoked" in str(final(done.stderr)["message"])
    # A CSR's key is the caller's: the agent never re-submits the CSR of a revoked certificate.
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "failure"]


async def test_once_for_a_request_no_worker_signs_in_time_exits_7_and_a_second_run_waits_for_the_same_request(
        agent_pki: AgentPki, tmp_path: Path, db: asyncpg.Connection, api_without_broker: str) -> None:
    config = write_config(agent_pki, tmp_path, address=api_without_broker)
    for _ in range(2):
        done = run_once(config, "--wait", "2")
        assert done.returncode == 7, done.stderr
        assert "still pending" in str(final(done.stderr)["message"])
    assert await requests_of(db, agent_pki) == 1
    assert not (tmp_path / "out" / "cert.pem").exists()
