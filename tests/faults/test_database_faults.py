"""Database connections cut under the workers' feet: every request still ends (DESIGN.md invariant 7) and
none gets two certificates (invariant 2). The shared PostgreSQL server is never restarted: only the
backends of this stack's own database are terminated."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from tests.faults.harness import (
    FINAL,
    assert_exactly_one_certificate_per_issued_request,
    ledger,
    project_with_pki,
    submit,
    wait_all_final,
    wait_until_queued,
)
from tests.stack import PG_BASE, Stack

pytestmark = pytest.mark.slow


async def _terminate_backends_while_issuing(stack: Stack, *, every: float, strikes: int, deadline: float) -> int:
    """Terminates every connection to the stack's database (the workers', the API's, the reconciler's):
    once at once, then again each time more requests were issued since the last strike, until ``strikes``
    strikes have ended backends while requests were half done (some issued, some still open), or nothing
    is open, or ``deadline`` seconds have passed. Returns how many backends it ended while requests were
    half done. (Striking on a fixed clock could starve the run: a worker signs 32 requests in one
    transaction, which a cut every 50 ms never let finish on a quiet machine.)"""
    watcher = await asyncpg.connect(stack.database_url)
    killer = await asyncpg.connect(f"{PG_BASE}/postgres")  # outside the victim database
    mid_run = hits = 0
    issued_at_last_strike: int | None = None
    stop_at = time.monotonic() + deadline
    try:
        while hits < strikes and time.monotonic() < stop_at:
            issued, still_open = await watcher.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'issued'),"
                " count(*) FILTER (WHERE status IN ('pending', 'processing')) FROM certificate_requests")
            if not still_open:
                break
            if issued_at_last_strike is None or issued > issued_at_last_strike:
                ended = await killer.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> $2", stack.db_name, watcher.get_server_pid())
                issued_at_last_strike = issued
                if issued and ended:
                    mid_run += ended
                    hits += 1
            await asyncio.sleep(every)
    finally:
        await watcher.close()
        await killer.close()
    return mid_run


async def test_requests_in_flight_when_database_connections_are_terminated_all_end_with_one_certificate_each(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    # Enough requests that issuing them outlasts several strikes: a worker takes every ready request in
    # chunks of 32 (the doorbell), so 100 were all issued between two strikes 0.1 s apart.
    ids = await submit(project.admin, project.pki.profile_id, 300)
    await wait_until_queued(stack, ids)

    stack.start_beat()
    starting = asyncio.create_task(asyncio.to_thread(stack.start_worker, name="worker-2"))
    # Strike again and again while the worker claims, signs and stores, and the reconciler queries: each
    # of them loses its connection at some point of its statement or transaction.
    ended_mid_run = await _terminate_backends_while_issuing(stack, every=0.02, strikes=3, deadline=60)
    await starting
    assert ended_mid_run > 0, "no connection was cut while requests were in flight"

    final = await wait_all_final(stack.database_url, 300, timeout=90)
    book = await ledger(stack.database_url)
    assert set(final) <= set(FINAL), dict(final)
    assert_exactly_one_certificate_per_issued_request(book, ids)
    assert book.failed_without_message == 0
