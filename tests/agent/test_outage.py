"""A server outage ridden out (DESIGN.md 10; issue 14, must show 4): with the API stopped for 60 s the
agent logs each failed attempt, backs off exponentially with jitter, keeps the old files exactly as
they were, and recovers by itself once the API is back, renewing what fell due meanwhile. A
certificate that expires while the API is down is noticed all the same (``on-failure``), and renewed
when the API returns. Each test has an API process of its own (same database and broker as the
session's), stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncpg
import pytest

from tests.agent.conftest import AgentPki, OwnApi, hook_runs, pair_matches, requests_of, serial_of, write_config

pytestmark = pytest.mark.slow

UNREACHABLE = "the API cannot be reached; the files on disk stay as they are"
BASE_DELAY, MAX_DELAY = 0.5, 8.0


def snapshot(folder: Path) -> tuple[bytes, bytes, bytes, str, str]:
    """Everything a reader of the outputs sees: the three files and where the links point."""
    key, cert, chain = folder / "private" / "key.pem", folder / "out" / "cert.pem", folder / "out" / "chain.pem"
    return key.read_bytes(), cert.read_bytes(), chain.read_bytes(), os.path.realpath(key), os.path.realpath(cert)


async def test_api_stopped_for_60_seconds_the_agent_backs_off_keeps_the_old_files_and_recovers_by_itself(
        agent_pki: AgentPki, own_api: OwnApi, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    # Due for renewal about 50 s after issuance, in the middle of the outage; valid for 100 s.
    config = write_config(agent_pki, tmp_path, address=own_api.url, ttl="100s", renew_before="50s",
                          retry={"base-delay": f"{BASE_DELAY}s", "max-delay": f"{MAX_DELAY:g}s"})
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    before = snapshot(tmp_path)
    first = serial_of(cert)
    expires = time.time() + 100
    own_api.stop()
    stopped = time.monotonic()
    while time.monotonic() - stopped < 60:
        assert snapshot(tmp_path) == before, "the files changed while the API was down"
        assert agent.proc.poll() is None, agent.tail()
        await asyncio.sleep(0.5)
    during = [line for line in agent.logs() if line["message"] == UNREACHABLE]
    own_api.start()
    await agent.until(lambda: agent.count("the API answers again") >= 1, timeout=30, what="recovery")
    await agent.until(lambda: serial_of(cert) != first and len(hook_runs(tmp_path)) == 2, timeout=30,
                      what="the renewal that fell due, and its hook")
    renewed_at = time.time()

    # Logged and backed off: each wait between half and all of base * 2^(attempt-1), capped at max-delay.
    assert 6 <= len(during) <= 25, [line["retryInSeconds"] for line in during]  # not one per second
    for line in during:
        ceiling = min(MAX_DELAY, BASE_DELAY * 2 ** (line["attempt"] - 1))
        assert ceiling / 2 - 0.01 <= line["retryInSeconds"] <= ceiling + 0.01, line
        assert "cannot reach" in line["error"], line
    capped = [line["retryInSeconds"] for line in during if line["attempt"] >= 6]
    assert capped and len(set(capped)) > 1, capped  # jittered, not in lockstep
    assert [line["attempt"] for line in during] == list(range(1, len(during) + 1))
    # Recovered by itself: renewed before the old certificate ran out, hooks as for any renewal.
    assert renewed_at < expires
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "renewal"]
    assert await requests_of(db, agent_pki) == 2


async def test_a_certificate_that_expires_while_the_api_is_down_runs_on_failure_and_is_renewed_when_it_returns(
        agent_pki: AgentPki, own_api: OwnApi, start_agent, tmp_path: Path) -> None:
    config = write_config(agent_pki, tmp_path, address=own_api.url, ttl="15s",
                          retry={"base-delay": "0.5s", "max-delay": "2s"})
    cert = tmp_path / "out" / "cert.pem"
    agent = start_agent(config)
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the first certificate")
    first = serial_of(cert)
    own_api.stop()
    await agent.until(lambda: [run[0] for run in hook_runs(tmp_path)] == ["issuance", "failure"], timeout=40,
                      what="on-failure for the expiry")
    assert serial_of(cert) == first  # nothing to replace it with yet: the expired files stay
    assert hook_runs(tmp_path)[1][2:4] == ["expired:", "the"], hook_runs(tmp_path)
    own_api.start()
    await agent.until(lambda: serial_of(cert) != first and len(hook_runs(tmp_path)) == 3, timeout=30,
                      what="the renewal and its hook")
    assert [run[0] for run in hook_runs(tmp_path)] == ["issuance", "failure", "renewal"]
    assert pair_matches(tmp_path / "private" / "key.pem", cert)
