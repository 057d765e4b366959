"""How ``kms-pki agent`` logs in (DESIGN.md 10, 5.2): credentials from the files the config names or from
upstream's environment variables (which win), the secret file removed once read when the config says
so, and the access token renewed with ``POST /api/v1/auth/token/renew`` before it runs out, without
logging in again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.agent.conftest import AgentPki, OwnApi, hook_runs, own_api_of, run_once, write_config
from tests.stack import Stack

TOKEN_TTL = 6


@pytest.fixture
def short_token_api(worker: Stack) -> Iterator[OwnApi]:
    api = own_api_of(worker, {"KMS_TOKEN_TTL_SECONDS": str(TOKEN_TTL)})
    try:
        yield api
    finally:
        api.stop()


async def test_credentials_from_upstreams_environment_variables_win_over_the_files(agent_pki: AgentPki,
                                                                                 tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path)
    (tmp_path / "client-id").write_text("kms_ci_not-this-one\n")
    (tmp_path / "client-secret").write_text("kms_cs_not-this-one\n")
    done = run_once(config, env={"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": agent_pki.client_id,
                                 "INFISICAL_UNIVERSAL_CLIENT_SECRET": agent_pki.client_secret})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "cert.pem").exists()


async def test_remove_client_secret_on_read_deletes_the_file_and_later_logins_still_work(
        agent_pki: AgentPki, short_token_api: OwnApi, start_agent, tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path, address=short_token_api.url, remove_secret=True)
    agent = start_agent(config)
    await agent.until(lambda: (tmp_path / "out" / "cert.pem").exists() and hook_runs(tmp_path), what="a certificate")
    assert not (tmp_path / "client-secret").exists()
    # Past the token's whole lifetime while the API is down, the agent must log in again: from memory.
    short_token_api.stop()
    await agent.until(lambda: agent.count("the API cannot be reached; the files on disk stay as they are") >= 1,
                      what="the outage noticed")
    logins = agent.count("logged in")
    await asyncio.sleep(TOKEN_TTL + 1)
    short_token_api.start()
    await agent.until(lambda: agent.count("logged in") > logins and agent.count("the API answers again") >= 1,
                      timeout=30, what="a login after the outage")
    assert not any("client-secret" in m for m in agent.messages()), agent.tail()


async def test_the_access_token_is_renewed_before_it_expires_without_logging_in_again(
        agent_pki: AgentPki, short_token_api: OwnApi, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, address=short_token_api.url, status_check="1s")
    agent = start_agent(config)
    await agent.until(lambda: agent.count("access token renewed") >= 3, timeout=40, what="three renewals")
    assert agent.count("logged in") == 1
    assert agent.count("the access token was refused; logging in again") == 0
    tokens = await db.fetch("SELECT t.created_at, t.expires_at FROM access_tokens t JOIN identities i ON "
                            "i.id = t.identity_id WHERE i.client_id = $1", agent_pki.client_id)
    # The tests' own admin login, and the agent's one login whose token was extended past its first end.
    assert len(tokens) == 2, tokens
    assert max((t["expires_at"] - t["created_at"]).total_seconds() for t in tokens) > TOKEN_TTL + 2
