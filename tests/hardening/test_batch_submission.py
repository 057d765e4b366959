"""Submitting a batch (or a CA) must never double it, nor store junk. Issue 8, items 4 and 8.

- Item 4: once the batch or CA is committed, a broker failure is not the client's problem: the API
  answers 202 (sending is best effort, the reconciler re-sends, and completes both), because a 503 made the client retry
  and made a second batch. Batches take an ``Idempotency-Key`` like single requests.
- Item 8: an item CSR over 16 KiB (or over 1 MiB, which was a 500) fails alone, and is not stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.pki.csr import MAX_CSR_BYTES
from tests.api_client import ApiClient, Reply, Tenant
from tests.batches.batching import (
    BATCHES,
    certificates_of_batch,
    csr_item,
    server_key_item,
    submit,
    wait_completed,
)
from tests.faults.harness import (
    fault_stack as new_fault_stack,
)
from tests.faults.harness import (
    project_with_pki,
    start_api_without_broker,
    start_worker_and_beat,
    wait_for_log,
)
from tests.issuance.issuing import MakeTenant
from tests.pki.authorities import ca_body, wait_until_settled
from tests.pki_setup import CA, make_pki
from tests.stack import Stack

OFFLINE_API = "api-no-broker-hardening"


@pytest.fixture(scope="module")
def offline_api(worker: Stack) -> Iterator[str]:
    """A second API on the session's database whose broker nobody listens on: what it accepts is
    committed, and its send fails."""
    url = start_api_without_broker(worker, name=OFFLINE_API)
    try:
        yield url
    finally:
        worker.stop(OFFLINE_API)


@pytest.fixture
def fault_stack() -> Iterator[Stack]:
    """A stack of its own (database and Redis server) with fast reconciler timings; the test starts it."""
    with new_fault_stack() as stack:
        yield stack


async def submit_with_key(client: ApiClient, profile_id: str, items: list[Any], key: str) -> Reply:
    return await client.post(BATCHES, {"profileId": profile_id, "items": items}, headers={"Idempotency-Key": key})


async def batches_of_project(db: asyncpg.Connection, project_id: str) -> list[str]:
    rows = await db.fetch("SELECT id FROM certificate_batches WHERE project_id = $1::uuid", project_id)
    return [str(r["id"]) for r in rows]


async def requests_of_project(db: asyncpg.Connection, project_id: str) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM certificate_requests WHERE project_id = $1::uuid", project_id)
    return n


def items(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [server_key_item(i) for i in range(start, start + count)]


# -- item 4: a broker failure after the commit -------------------------------------------------------


async def test_batch_posted_while_the_broker_is_unreachable_is_202_and_exactly_one_batch(
    worker: Stack, tenant: Tenant, offline_api: str, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    offline = ApiClient(tenant.admin.session, offline_api, tenant.admin.token)

    r = await submit(offline, pki.profile_id, items(3))

    assert r.status == 202, (r.status, r.body)
    assert r.body["total"] == 3
    assert await batches_of_project(db, tenant.project_id) == [r.body["batchId"]]
    assert await requests_of_project(db, tenant.project_id) == 3


async def test_ca_posted_while_the_broker_is_unreachable_is_202_pending_and_exactly_one_ca(
    worker: Stack, tenant: Tenant, offline_api: str, db: asyncpg.Connection
) -> None:
    offline = ApiClient(tenant.admin.session, offline_api, tenant.admin.token)

    r = await offline.post(CA, {"projectId": tenant.project_id, "name": "offline-root",
                                "configuration": {"type": "root", "commonName": "Offline Root",
                                                  "keyAlgorithm": "EC_prime256v1", "ttl": "1y"}})

    assert r.status == 202, (r.status, r.body)
    assert r.body["status"] == "pending-certificate"
    rows = await db.fetch("SELECT id, status FROM certificate_authorities WHERE project_id = $1::uuid",
                          tenant.project_id)
    assert [(str(row["id"]), row["status"]) for row in rows] == [(r.body["id"], "pending")]


@pytest.mark.slow
async def test_batch_and_ca_posted_while_the_broker_is_unreachable_are_completed_by_the_reconciler(
    fault_stack: Stack
) -> None:
    stack = fault_stack
    async with aiohttp.ClientSession() as session:
        project = await project_with_pki(stack, session)  # the API up, no worker
        offline = ApiClient(session, await asyncio.to_thread(start_api_without_broker, stack), project.admin.token)
        r = await submit(offline, project.pki.profile_id, items(5))
        assert r.status == 202, (r.status, r.body)
        await wait_for_log(stack, "api-no-broker", "enqueue failed")  # logged, not answered 503
        ca = await offline.post(CA, ca_body(project.pki.project_id, "offline child", parent=project.pki.issuing_id,
                                            ttl="1y"))
        assert ca.status == 202 and ca.body["status"] == "pending-certificate", (ca.status, ca.body)

        await start_worker_and_beat(stack)
        view = await wait_completed(project.admin, r.body["batchId"], timeout=60)
        ca_view = await wait_until_settled(project.admin, ca.body["id"], timeout=60)

    assert (view["issued"], view["failed"]) == (5, 0), view
    assert ca_view["status"] == "active", ca_view
    db = await asyncpg.connect(stack.database_url)
    try:
        assert await certificates_of_batch(db, r.body["batchId"]) == (5, 5, 0)
        assert await db.fetchval("SELECT count(*) FROM certificate_batches") == 1
        # Root, issuing CA and the one posted offline: that one once, with its certificate.
        rows = await db.fetch("SELECT id, status, certificate_pem IS NOT NULL AS signed FROM certificate_authorities"
                              " WHERE parent_ca_id = $1::uuid", project.pki.issuing_id)
        assert [(str(row["id"]), row["status"], row["signed"]) for row in rows] == [(ca.body["id"], "active", True)]
    finally:
        await db.close()


# -- item 4: Idempotency-Key on batches --------------------------------------------------------------


async def test_batch_retried_with_the_same_key_and_body_is_the_same_batch_and_its_items_are_not_doubled(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())

    first = await submit_with_key(tenant.admin, pki.profile_id, items(3), key)
    await wait_completed(tenant.admin, first.body["batchId"], timeout=30)
    retry = await submit_with_key(tenant.admin, pki.profile_id, items(3), key)

    assert (first.status, retry.status) == (202, 202), (first.body, retry.body)
    assert retry.body == first.body
    assert await batches_of_project(db, tenant.project_id) == [first.body["batchId"]]
    assert await requests_of_project(db, tenant.project_id) == 3
    assert await certificates_of_batch(db, first.body["batchId"]) == (3, 3, 0)


async def test_batch_key_reused_with_another_body_is_a_409_problem_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())
    first = await submit_with_key(tenant.admin, pki.profile_id, items(3), key)
    assert first.status == 202, first.body

    other = await submit_with_key(tenant.admin, pki.profile_id, items(2, start=10), key)

    assert other.status == 409 and other.is_problem(), (other.status, other.body)
    assert [e["field"] for e in other.body["errors"]] == ["Idempotency-Key"], other.body
    assert await batches_of_project(db, tenant.project_id) == [first.body["batchId"]]
    assert await requests_of_project(db, tenant.project_id) == 3


async def test_ten_concurrent_batch_submissions_with_one_key_make_one_batch(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())

    replies = await asyncio.gather(*(submit_with_key(tenant.admin, pki.profile_id, items(4), key)
                                     for _ in range(10)))

    assert [r.status for r in replies] == [202] * 10, [(r.status, r.body) for r in replies]
    ids = {r.body["batchId"] for r in replies}
    assert len(ids) == 1, ids
    assert await batches_of_project(db, tenant.project_id) == list(ids)
    assert await requests_of_project(db, tenant.project_id) == 4


async def test_same_batch_key_in_another_project_is_an_independent_batch_and_each_retry_finds_its_own(
    worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    a, b = await make_tenant("keys-a"), await make_tenant("keys-b")
    pki_a = await make_pki(a.admin, a.project_id)
    pki_b = await make_pki(b.admin, b.project_id)
    key = str(uuid.uuid4())

    first_a = await submit_with_key(a.admin, pki_a.profile_id, items(2), key)
    first_b = await submit_with_key(b.admin, pki_b.profile_id, items(2), key)
    retry_a = await submit_with_key(a.admin, pki_a.profile_id, items(2), key)
    retry_b = await submit_with_key(b.admin, pki_b.profile_id, items(2), key)

    assert {r.status for r in (first_a, first_b, retry_a, retry_b)} == {202}
    assert first_a.body["batchId"] != first_b.body["batchId"]
    assert retry_a.body["batchId"] == first_a.body["batchId"]
    assert retry_b.body["batchId"] == first_b.body["batchId"]
    assert await batches_of_project(db, a.project_id) == [first_a.body["batchId"]]
    assert await batches_of_project(db, b.project_id) == [first_b.body["batchId"]]


# -- item 8: oversized item CSRs ---------------------------------------------------------------------


def oversized_csr(size: int) -> str:
    """PEM armour around ``size`` characters in all: far too big to be a CSR a client meant to send."""
    begin, end = "-----BEGIN CERTIFICATE REQUEST-----\n", "\n-----END CERTIFICATE REQUEST-----\n"
    return begin + "A" * (size - len(begin) - len(end)) + end


async def assert_oversized_csr_item_fails_alone_unstored(tenant: Tenant, db: asyncpg.Connection, size: int) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    big = oversized_csr(size)
    assert len(big) == size

    r = await submit(tenant.admin, pki.profile_id, [csr_item(0), {"csr": big}, server_key_item(2)])

    assert r.status == 202, (r.status, str(r.body)[:2000])
    assert r.body["failedAtSubmission"] == 1, r.body
    view = await wait_completed(tenant.admin, r.body["batchId"], timeout=30)
    assert (view["issued"], view["failed"]) == (2, 1), view
    rows = await db.fetch(
        "SELECT batch_index, status, csr_pem IS NULL AS csr_dropped, error_message FROM certificate_requests"
        " WHERE batch_id = $1::uuid ORDER BY batch_index", r.body["batchId"])
    assert [(row["batch_index"], row["status"]) for row in rows] == [(0, "issued"), (1, "failed"), (2, "issued")]
    oversized = rows[1]
    assert oversized["csr_dropped"], "the oversized CSR was stored"
    assert "csr" in oversized["error_message"] and str(MAX_CSR_BYTES) in oversized["error_message"], \
        oversized["error_message"][:500]
    assert len(oversized["error_message"]) < 1000


async def test_batch_item_csr_over_16_kib_is_a_failed_item_whose_csr_is_not_stored(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    await assert_oversized_csr_item_fails_alone_unstored(tenant, db, MAX_CSR_BYTES + 1)


async def test_batch_item_csr_over_1_mib_is_a_failed_item_not_a_500_and_its_csr_is_not_stored(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    await assert_oversized_csr_item_fails_alone_unstored(tenant, db, 1024 * 1024 + 1)
