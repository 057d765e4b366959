"""Long-poll under load (issue 8, must show 2): 50 clients long-polling a running 10,000-item batch and 200
long-polling single requests. The database sees a few queries per waiter per notification, not a
busy loop, and other requests keep answering promptly. The observer is PostgreSQL's own statistics
(pg_stat_database), not the service's counters."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.api_client import ApiClient, Tenant
from tests.batches.batching import BATCHES
from tests.pki_setup import ISSUE, PROFILES, make_pki
from tests.stack import Stack

pytestmark = pytest.mark.slow
BATCH_ITEMS = 10_000
BATCH_WAITERS = 50
SINGLE_WAITERS = 200
CHUNK = 100


async def transactions(db: asyncpg.Connection) -> int:
    """Transactions of the test database so far, once every backend has flushed its statistics (an idle
    backend flushes within PostgreSQL's 10 s idle interval)."""
    await db.execute("SELECT pg_stat_clear_snapshot()")
    return int(await db.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                                 " WHERE datname = current_database()"))


async def settled_transactions(db: asyncpg.Connection) -> int:
    await asyncio.sleep(11)
    return await transactions(db)


async def latencies(client: ApiClient, path: str, stop: asyncio.Event) -> list[float]:
    """A cheap authenticated read every 100 ms, on a connection of its own (the waiters' HTTP session has
    a bounded connection pool; sharing it would measure the client, not the service)."""
    seen = []
    async with aiohttp.ClientSession() as own:
        probe = ApiClient(own, client.base, client.token)
        while not stop.is_set():
            start = time.perf_counter()
            r = await probe.get(path)
            assert r.status == 200, r.body
            seen.append(time.perf_counter() - start)
            await asyncio.sleep(0.1)
    return seen


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


def item(i: int) -> dict[str, Any]:
    name = f"load-{i}.example.test"
    return {"attributes": {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}}


async def test_waiters_on_a_running_batch_and_on_single_requests_cost_a_few_queries_per_notification(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    profile_path = f"{PROFILES}/{pki.profile_id}"
    stop = asyncio.Event()
    idle = asyncio.create_task(latencies(tenant.admin, profile_path, stop))
    await asyncio.sleep(3)
    stop.set()
    idle_p95 = p95(await idle)

    batch = await tenant.admin.post(BATCHES, {"profileId": pki.profile_id,
                                              "items": [item(i) for i in range(BATCH_ITEMS)]})
    assert batch.status == 202, batch.body
    batch_id = batch.body["batchId"]
    before = await transactions(db)
    started = time.monotonic()

    async def wait_batch() -> str:
        while time.monotonic() - started < 120:
            r = await tenant.admin.get(f"{BATCHES}/{batch_id}", params={"wait": "30"})
            assert r.status == 200, r.body
            if r.body["status"] == "completed":
                return "completed"
        return "timed out"

    async def wait_single(i: int) -> str:
        r = await tenant.admin.post(ISSUE, {"profileId": pki.profile_id, **item(BATCH_ITEMS + i)},
                                    params={"wait": "30"})
        assert r.status in (200, 202), r.body
        return str(r.body["status"])

    stop = asyncio.Event()
    busy = asyncio.create_task(latencies(tenant.admin, profile_path, stop))
    outcomes = await asyncio.gather(*(wait_batch() for _ in range(BATCH_WAITERS)),
                                    *(wait_single(i) for i in range(SINGLE_WAITERS)))
    stop.set()
    busy_p95 = p95(await busy)
    elapsed = time.monotonic() - started
    spent = await settled_transactions(db) - before

    assert outcomes[:BATCH_WAITERS] == ["completed"] * BATCH_WAITERS
    assert set(outcomes[BATCH_WAITERS:]) == {"issued"}
    # What the work itself costs: per chunk a claim and a signing transaction, per single request an
    # authentication, an insert and its chunk's share; per notification each waiter may re-read once
    # (batch waiters share one read). The allowance is three queries per waiter per notification.
    notifications = BATCH_ITEMS // CHUNK + SINGLE_WAITERS
    work = 5 * (BATCH_ITEMS // CHUNK) + 10 * SINGLE_WAITERS
    allowance = work + 3 * (BATCH_WAITERS * (BATCH_ITEMS // CHUNK) + SINGLE_WAITERS)
    print(f"\nlong-poll load: {spent} transactions in {elapsed:.1f}s for {notifications} notifications "
          f"({BATCH_WAITERS} batch and {SINGLE_WAITERS} single waiters); allowance {allowance}; "
          f"profile GET p95 idle {idle_p95 * 1000:.1f} ms, under load {busy_p95 * 1000:.1f} ms")
    assert spent <= allowance, f"{spent} transactions: waiters re-read without notifications"
    assert busy_p95 < 1.0, f"other requests slowed to p95 {busy_p95:.3f}s under long-poll load"
