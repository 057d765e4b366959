"""A worker SIGKILLed halfway through a batch (DESIGN.md invariants 1, 2 and 7): another worker and the
reconciler finish it, and no item gets two certificates. This test runs its own stack with short
timings (a 5 s lease, a reconciler every second), so what it kills touches no other test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest

from tests.api_client import ApiClient, open_tenant
from tests.batches.batching import (
    all_items,
    by_status,
    certificates_of_batch,
    hostile_item,
    submit,
    valid_item,
    wait_completed,
)
from tests.pki_setup import make_pki
from tests.stack import Stack

pytestmark = pytest.mark.slow

TOTAL = 5_000
INVALID = range(0, TOTAL, 250)  # 20 items the API refuses, so "one per valid item" is not "one per item"
SHORT_TIMINGS = {
    "KMS_LEASE_SECONDS": "5",
    "KMS_RECONCILE_AFTER_SECONDS": "2",
    "KMS_RECONCILE_INTERVAL_SECONDS": "1",
}


@pytest.fixture
def own_stack() -> Iterator[Stack]:
    stack = Stack(name="batchkill", extra_env=SHORT_TIMINGS)
    stack.create_database()
    try:
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.drop()


@pytest.fixture
async def admin(own_stack: Stack) -> AsyncIterator[tuple[ApiClient, str]]:
    """A logged-in admin of a fresh project on ``own_stack``, and the project id."""
    async with aiohttp.ClientSession() as session:
        tenant = await open_tenant(own_stack, session, "batchkill")
        yield tenant.admin, tenant.project_id


async def issued_so_far(db: asyncpg.Connection, batch_id: str) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM certificate_requests WHERE batch_id = $1::uuid AND status = 'issued'", batch_id)
    return n


async def wait_until_issued(db: asyncpg.Connection, batch_id: str, low: int, high: int, timeout: float) -> int:
    """Polls every 20 ms until at least ``low`` (and fewer than ``high``) items are issued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = await issued_so_far(db, batch_id)
        assert n < high, f"the batch ran past {high} issued items before the kill: {n}"
        if n >= low:
            return n
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {low} items issued in {timeout}s")


async def test_worker_killed_halfway_through_a_batch_leaves_exactly_one_certificate_per_valid_item(
    own_stack: Stack, admin: tuple[ApiClient, str]
) -> None:
    client, project_id = admin
    pki = await make_pki(client, project_id)
    items = [hostile_item("ttl-over-policy-max", i) if i in INVALID else valid_item(i) for i in range(TOTAL)]
    valid = TOTAL - len(INVALID)
    db = await asyncpg.connect(own_stack.database_url)
    try:
        r = await submit(client, pki.profile_id, items)
        assert r.status == 202, (r.status, r.body)
        batch_id = r.body["batchId"]

        at_kill = await wait_until_issued(db, batch_id, valid // 4, valid * 3 // 4, timeout=60)
        # Aim the kill at a moment when a chunk is claimed (processing): a chunk takes a fraction of a
        # second, so poll briefly for one before pulling the trigger.
        for _ in range(200):
            if await db.fetchval("SELECT count(*) FROM certificate_requests WHERE batch_id = $1::uuid"
                                 " AND status = 'processing'", batch_id):
                break
            await asyncio.sleep(0.005)
        own_stack.kill("worker")  # SIGKILL to the process group: the pool children die mid-chunk
        left = dict(await db.fetch("SELECT status, count(*) FROM certificate_requests WHERE batch_id = $1::uuid"
                                   " GROUP BY status", batch_id))
        after_kill = left.get("issued", 0)
        assert after_kill < valid, f"the kill came too late to matter: {left}"
        # Left behind: chunks the dead worker had claimed (processing, under a lease no one will release:
        # only the reconciler brings those back), chunks it had prefetched but not acknowledged, and chunks
        # still queued. The kill usually lands mid-chunk; when it falls between two chunks, the prefetched
        # and unacknowledged messages are still what must not be lost, so the test goes on either way.
        assert left.get("processing", 0) + left.get("pending", 0) > 0, f"nothing was left in flight: {left}"

        own_stack.start_beat()  # its reconciler re-sends what the dead worker held once the lease ends
        await asyncio.to_thread(own_stack.start_worker, name="worker-2")
        batch = await wait_completed(client, batch_id, timeout=120)

        assert (batch["issued"], batch["failed"], batch["pending"]) == (valid, len(INVALID), 0), \
            (at_kill, left, batch)
        assert await certificates_of_batch(db, batch_id) == (valid, valid, 0)
        twice = await db.fetchval(
            "SELECT count(*) FROM (SELECT c.request_id FROM certificates c JOIN certificate_requests r"
            " ON r.id = c.request_id WHERE r.batch_id = $1::uuid GROUP BY c.request_id HAVING count(*) > 1) t",
            batch_id)
        assert twice == 0
        items_now = await all_items(client, batch_id)
        assert by_status(items_now) == {"issued": valid, "failed": len(INVALID)}
        assert {i["index"] for i in items_now if i["status"] == "failed"} == set(INVALID)
    finally:
        await db.close()
