"""Post-hooks (DESIGN.md 10): each runs once per change, bounded by its timeout (its whole process group
killed past it, the agent carrying on), never sees the client secret, learns what happened from its
environment, and is not lost when the agent dies while it runs."""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path

from tests.agent.conftest import AgentPki, hook_runs, run_once, write_config


def running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


async def test_a_hook_past_its_timeout_is_killed_with_its_children_and_the_agent_carries_on(
        agent_pki: AgentPki, start_agent, tmp_path: Path) -> None:
    marker = f"30.{secrets.randbelow(10**6):06d}"
    late = tmp_path / "late"
    config = write_config(agent_pki, tmp_path, hooks={
        "on-issuance": {"command": f"sleep {marker}; touch {late}", "timeout": 1}})
    agent = start_agent(config)
    await agent.until(lambda: agent.count("post-hook timed out after 1s and was killed") == 1, what="the timeout")
    assert not running(f"sleep {marker}")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="the agent carrying on")
    assert (tmp_path / "out" / "cert.pem").exists() and not late.exists()
    assert agent.count("post-hook timed out after 1s and was killed") == 1  # not run again for the same change


async def test_hooks_learn_the_event_and_paths_from_their_environment_and_never_the_client_secret(
        agent_pki: AgentPki, tmp_path: Path) -> None:
    seen = tmp_path / "hook-env"
    config = write_config(agent_pki, tmp_path, hooks={"on-issuance": {"command": f"env > {seen}"}})
    (tmp_path / "client-secret").write_text("kms_cs_wrong-file-the-environment-wins\n")
    done = run_once(config, env={"INFISICAL_UNIVERSAL_CLIENT_SECRET": agent_pki.client_secret})
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert agent_pki.client_secret not in seen.read_text()
    assert "INFISICAL_UNIVERSAL_CLIENT_SECRET" not in env
    assert env["KMS_AGENT_EVENT"] == "issuance"
    assert env["KMS_AGENT_CERTIFICATE_PATH"] == str(tmp_path / "out" / "cert.pem")
    assert env["KMS_AGENT_PRIVATE_KEY_PATH"] == str(tmp_path / "private" / "key.pem")
    assert env["KMS_AGENT_CERTIFICATE_NAME"] == "web.example.test" and env["KMS_AGENT_SERIAL_NUMBER"]


async def test_a_hook_interrupted_by_the_agents_death_runs_once_after_the_restart(
        agent_pki: AgentPki, start_agent, tmp_path: Path) -> None:
    marker = f"2.{secrets.randbelow(10**6):06d}"
    log = tmp_path / "hooks.log"
    config = write_config(agent_pki, tmp_path, hooks={
        "on-issuance": {"command": f'sleep {marker} && echo "$KMS_AGENT_EVENT" >> {log}', "timeout": 20}})
    first = start_agent(config)
    await first.until(lambda: running(f"sleep {marker}"), what="the hook running")
    # The host goes down: the agent and the hook with it.
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    subprocess.run(["pkill", "-KILL", "-f", f"sleep {marker}"], check=False)
    assert not log.exists()
    second = start_agent(config)
    await second.until(lambda: log.exists(), what="the hook owed")
    checks = second.count("status checked")
    await second.until(lambda: second.count("status checked") >= checks + 2, what="two status checks")
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance"]
    assert second.count("certificate requested") == 0
