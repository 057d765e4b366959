"""Reading a batch's items: cursor pages in index order with no gaps and no duplicates, a status filter
that holds across pages, a clear 400 for a cursor (or filter) the API never gave out, and a 422 for a
limit outside the schema's range."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.api_client import Tenant
from tests.batches.batching import BATCHES, all_items, item_pages, submit, valid_item, wait_completed
from tests.pki_setup import make_pki
from tests.stack import Stack

TOTAL = 250
INVALID = set(range(5, TOTAL, 9))  # 28 items with a ttl past the policy's 90 days


def item(index: int) -> dict[str, Any]:
    if index in INVALID:
        return {"attributes": {**valid_item(1)["attributes"], "ttl": "400d"}}
    return valid_item(index)


async def completed_batch(tenant: Tenant) -> str:
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await submit(tenant.admin, pki.profile_id, [item(i) for i in range(TOTAL)])
    assert r.status == 202, r.body
    batch = await wait_completed(tenant.admin, r.body["batchId"], timeout=60)
    assert (batch["issued"], batch["failed"]) == (TOTAL - len(INVALID), len(INVALID)), batch
    batch_id: str = r.body["batchId"]
    return batch_id


async def small_batch(tenant: Tenant) -> str:
    """A batch to ask questions of (its items need not be final for a request to be refused)."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await submit(tenant.admin, pki.profile_id, [item(i) for i in range(3)])
    assert r.status == 202, r.body
    batch_id: str = r.body["batchId"]
    return batch_id


@pytest.mark.parametrize("limit", [1, 40, 125, 250])
async def test_cursor_pages_hold_every_item_once_in_index_order(limit: int, worker: Stack, tenant: Tenant) -> None:
    batch_id = await completed_batch(tenant)

    pages = await item_pages(tenant.admin, batch_id, limit=limit)

    indexes = [i["index"] for page in pages for i in page]
    assert indexes == list(range(TOTAL))  # no gap, no duplicate, in order
    assert all(len(page) == limit for page in pages[:-1])
    # Each item is the same whichever page size read it.
    one_page = await all_items(tenant.admin, batch_id, limit=1000)
    assert [i for page in pages for i in page] == one_page
    assert len({i["certificateRequestId"] for i in one_page}) == TOTAL


@pytest.mark.parametrize("status", ["failed", "issued"])
async def test_status_filter_returns_only_items_of_that_status_on_every_page(
    status: str, worker: Stack, tenant: Tenant
) -> None:
    batch_id = await completed_batch(tenant)
    expected = sorted(INVALID) if status == "failed" else sorted(set(range(TOTAL)) - INVALID)

    pages = await item_pages(tenant.admin, batch_id, status=status, limit=7)

    found = [i for page in pages for i in page]
    assert {i["status"] for i in found} == {status}
    assert [i["index"] for i in found] == expected
    assert (await item_pages(tenant.admin, batch_id, status="pending")) == [[]]


@pytest.mark.parametrize("cursor", ["garbage", "", "i", "5", "i-1", "i1.5", "i 7", "I7", "i²", "i٣",
                                    "i10000", "i" + "9" * 20, "i" + "9" * 5000])
async def test_cursor_the_api_never_returned_is_a_400(cursor: str, worker: Stack, tenant: Tenant) -> None:
    batch_id = await small_batch(tenant)

    r = await tenant.admin.get(f"{BATCHES}/{batch_id}/items", params={"cursor": cursor})

    assert r.status == 400, (r.status, r.body)
    assert r.is_problem(), r.body
    assert [e["field"] for e in r.body["errors"]] == ["cursor"], r.body


@pytest.mark.parametrize("params", [{"status": "processing"}, {"status": "ISSUED"}])
async def test_unknown_status_is_a_400(params: dict[str, str], worker: Stack, tenant: Tenant) -> None:
    batch_id = await small_batch(tenant)

    r = await tenant.admin.get(f"{BATCHES}/{batch_id}/items", params=params)

    assert r.status == 400, (r.status, r.body)
    assert r.is_problem(), r.body
    assert [e["field"] for e in r.body["errors"]] == list(params), r.body


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}])
async def test_limit_out_of_range_is_a_422(params: dict[str, str], worker: Stack, tenant: Tenant) -> None:
    batch_id = await small_batch(tenant)

    r = await tenant.admin.get(f"{BATCHES}/{batch_id}/items", params=params)

    assert r.status == 422, (r.status, r.body)
    assert r.body["error"] == "ValidationFailure", r.body
    assert r.is_problem(), r.body
    assert [e["field"] for e in r.body["errors"]] == list(params), r.body


async def test_viewer_reads_items_and_counters_but_never_a_private_key(worker: Stack, tenant: Tenant) -> None:
    batch_id = await completed_batch(tenant)
    viewer, _ = await tenant.identity("viewer")

    as_admin = await all_items(tenant.admin, batch_id)
    as_viewer = await all_items(viewer, batch_id)

    assert (await viewer.get(f"{BATCHES}/{batch_id}")).body["issued"] == TOTAL - len(INVALID)
    assert any(i["privateKey"] for i in as_admin)  # odd indexes: keys the server generated
    assert all(i["privateKey"] is None for i in as_viewer)
    assert [{**i, "privateKey": None} for i in as_admin] == as_viewer


async def test_an_item_a_worker_is_signing_reads_pending_as_its_request_does(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await submit(tenant.admin, pki.profile_id, [valid_item(0)])
    assert r.status == 202, r.body
    await wait_completed(tenant.admin, r.body["batchId"], timeout=30)
    # Put back into the state a worker holds it in while signing (the read path is what is tested).
    await db.execute("UPDATE certificate_requests SET status = 'processing', lease_expires_at = now() + interval '1h'"
                     " WHERE batch_id = $1::uuid", r.body["batchId"])

    (listed,) = await all_items(tenant.admin, r.body["batchId"])
    (pending,) = await all_items(tenant.admin, r.body["batchId"], status="pending")

    assert listed["status"] == pending["status"] == "pending", listed
