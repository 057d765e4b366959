"""The agent's logs (DESIGN.md 10, STYLE.md): one JSON object a line, each with time, level and message,
naming the certificate; never a client secret, an access token or a private key, even with --verbose."""

from __future__ import annotations

from pathlib import Path

from tests.agent.conftest import AgentPki, log_lines, run_once, write_config


async def test_every_log_line_is_json_and_none_holds_a_secret_a_token_or_a_key(agent_pki: AgentPki,
                                                                               tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path)
    done = run_once(config, "--verbose")
    assert done.returncode == 0, done.stderr
    lines = log_lines(done.stderr)  # every line parses
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("certificate") == "web.example.test" and line.get("serialNumber") for line in lines)
    assert any(line["level"] == "debug" for line in lines)
    key = (tmp_path / "private" / "key.pem").read_text()
    body = [line for line in key.splitlines() if "-----" not in line]
    assert agent_pki.client_secret not in done.stderr
    assert "kms_at_" not in done.stderr  # no access token
    assert "PRIVATE KEY" not in done.stderr and not any(part in done.stderr for part in body)
    assert done.stdout == ""
