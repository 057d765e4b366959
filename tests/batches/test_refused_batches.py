"""Batches refused as a whole: too big, empty, not a list of objects, naming another project's profile,
sent by a viewer, or read by another project. Each answer is a clear 4xx problem+json, and a refused
batch writes nothing: no batch row, no certificate request, no certificate."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.api_client import Reply, Tenant, assert_problem
from tests.batches.batching import BATCHES, NDJSON, rows_written, server_key_item, submit, valid_item
from tests.pki_setup import make_pki
from tests.stack import Stack


def fields(r: Reply) -> list[str]:
    return [e["field"] for e in r.body.get("errors", [])]


async def test_batch_of_10001_items_is_a_422_naming_items_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await rows_written(db)

    r = await submit(tenant.admin, pki.profile_id, [server_key_item(i) for i in range(10_001)])

    assert_problem(r, 422)
    assert r.body["error"] == "ValidationFailure", r.body
    assert fields(r) == ["items"], r.body
    assert "10000" in r.body["errors"][0]["message"], r.body
    assert await rows_written(db) == before


async def test_empty_batch_is_a_422_naming_items_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await rows_written(db)

    r = await submit(tenant.admin, pki.profile_id, [])

    assert_problem(r, 422)
    assert r.body["error"] == "ValidationFailure", r.body
    assert fields(r) == ["items"], r.body
    assert await rows_written(db) == before


@pytest.mark.parametrize("item", [42, "csr", None, [], True], ids=["number", "string", "null", "list", "boolean"])
async def test_item_that_is_not_an_object_is_a_422_naming_it_and_writes_nothing(
    item: Any, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await rows_written(db)

    r = await submit(tenant.admin, pki.profile_id, [valid_item(0), valid_item(1), item])

    assert_problem(r, 422)
    assert r.body["error"] == "ValidationFailure", r.body
    assert fields(r) == ["items[2]"], r.body
    assert await rows_written(db) == before


async def test_profile_of_another_project_as_the_batch_profile_is_a_404_and_writes_nothing(
    worker: Stack, tenant: Tenant, make_tenant: Any, db: asyncpg.Connection
) -> None:
    other = await make_tenant("beta")
    theirs = await make_pki(other.admin, other.project_id, slug="theirs")
    before = await rows_written(db)

    r = await submit(tenant.admin, theirs.profile_id, [valid_item(0), valid_item(1)])

    assert_problem(r, 404)
    assert fields(r) == ["profileId"], r.body
    assert theirs.profile_id in r.body["errors"][0]["message"]
    assert await rows_written(db) == before


async def test_profile_of_another_project_named_by_one_item_is_a_404_and_writes_nothing(
    worker: Stack, tenant: Tenant, make_tenant: Any, db: asyncpg.Connection
) -> None:
    ours = await make_pki(tenant.admin, tenant.project_id)
    other = await make_tenant("beta")
    theirs = await make_pki(other.admin, other.project_id, slug="theirs")
    before = await rows_written(db)

    # Item 2 alone names the other project's profile: the whole batch is refused, not just that item.
    items = [valid_item(0), valid_item(1), {**valid_item(2), "profileId": theirs.profile_id}, valid_item(3)]
    r = await submit(tenant.admin, ours.profile_id, items)

    assert_problem(r, 404)
    assert fields(r) == ["profileId"], r.body
    assert theirs.profile_id in r.body["errors"][0]["message"]
    assert await rows_written(db) == before


async def test_profile_that_does_not_exist_named_by_one_item_is_a_404_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await rows_written(db)
    missing = str(uuid.uuid4())

    r = await submit(tenant.admin, pki.profile_id, [valid_item(0), {**valid_item(1), "profileId": missing}])

    assert_problem(r, 404)
    assert missing in r.body["errors"][0]["message"]
    assert await rows_written(db) == before


async def test_viewer_may_not_submit_a_batch_403_and_nothing_written(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    viewer, _ = await tenant.identity("viewer")
    before = await rows_written(db)

    r = await submit(viewer, pki.profile_id, [valid_item(0), valid_item(1)])

    assert_problem(r, 403)
    assert "issuer" in r.body["detail"], r.body
    assert await rows_written(db) == before


async def test_batch_of_another_project_is_404_on_its_counters_and_its_items(
    worker: Stack, tenant: Tenant, make_tenant: Any
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await submit(tenant.admin, pki.profile_id, [valid_item(0), valid_item(1)])
    assert r.status == 202, r.body
    batch_id = r.body["batchId"]
    assert (await tenant.admin.get(f"{BATCHES}/{batch_id}")).status == 200
    other = await make_tenant("beta")

    for path in (f"{BATCHES}/{batch_id}", f"{BATCHES}/{batch_id}?wait=1", f"{BATCHES}/{batch_id}/items",
                 f"{BATCHES}/{batch_id}/items?status=issued"):
        assert_problem(await other.admin.get(path), 404)
    assert_problem(await other.admin.get(f"{BATCHES}/{batch_id}/items", headers={"Accept": NDJSON}), 404)


async def test_batch_that_does_not_exist_is_404(worker: Stack, tenant: Tenant) -> None:
    batch_id = str(uuid.UUID(int=0))
    assert_problem(await tenant.admin.get(f"{BATCHES}/{batch_id}"), 404)
    assert_problem(await tenant.admin.get(f"{BATCHES}/{batch_id}/items"), 404)


async def test_batch_id_that_is_not_a_uuid_is_a_422_naming_it(worker: Stack, tenant: Tenant) -> None:
    for path in (f"{BATCHES}/not-a-batch-id", f"{BATCHES}/not-a-batch-id/items"):
        r = await tenant.admin.get(path)
        assert_problem(r, 422)
        assert fields(r) == ["batchId"], (path, r.body)
