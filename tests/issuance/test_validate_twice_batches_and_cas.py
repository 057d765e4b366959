"""Validate twice (DESIGN.md 4.6) on the other paths: a batch's items and a CA's creation are decided by the
worker against the policy and the parent CA as they are when it signs, not as they were when the API
accepted them. Each is submitted through ``api_without_broker`` (stored, no worker told: and, since
issue 8, answered 202 rather than 503), then the world changes, then the real broker is rung."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from api.broker import Broker
from shared import tasks
from tests.api_client import ApiClient, Tenant
from tests.batches.batching import BATCHES, all_items, wait_completed
from tests.pki.authorities import ca_body, wait_until_settled
from tests.pki_setup import CA, POLICIES, make_pki
from tests.stack import Stack


async def send(stack: Stack, name: str, args: list[Any]) -> None:
    broker = Broker(stack.broker_url)
    try:
        await broker.send(name, args)
    finally:
        await broker.close()


async def test_batch_items_fail_naming_the_rule_when_the_policy_tightens_before_the_worker_signs(
    worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id, slug="twice-batch")
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    items = [{"attributes": {"commonName": f"item-{i}.example.test",
                             "altNames": [{"type": "dns_name", "value": f"item-{i}.example.test"}]}} for i in range(5)]
    r = await deaf.post(BATCHES, {"profileId": pki.profile_id, "items": items})
    assert r.status == 202 and r.body["failedAtSubmission"] == 0, r.body
    batch_id = r.body["batchId"]
    tightened = await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}", {
        "subject": [{"type": "common_name", "allowed": ["*.internal.test"]}],
        "sans": [{"type": "dns_name", "allowed": ["*.internal.test"]}],
    })
    assert tightened.status == 200, tightened.body

    ids = [item["certificateRequestId"] for item in await all_items(tenant.admin, batch_id)]
    await send(worker, tasks.ISSUE_BATCH_CHUNK, [ids, batch_id])
    view = await wait_completed(tenant.admin, batch_id, timeout=30)

    assert (view["issued"], view["failed"]) == (0, 5), view
    for item in await all_items(tenant.admin, batch_id):
        assert item["status"] == "failed" and "*.internal.test" in item["errorMessage"], item
    assert await db.fetchval("SELECT count(*) FROM certificates WHERE request_id = ANY($1::uuid[])", ids) == 0


async def test_intermediate_ca_fails_when_its_parent_is_disabled_before_the_worker_creates_it(
    worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id, slug="twice-ca")
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    r = await deaf.post(CA, ca_body(tenant.project_id, "twice-child", parent=pki.issuing_id, ttl="1y"))
    assert r.status == 202 and r.body["status"] == "pending-certificate", r.body
    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    assert disabled.status == 200, disabled.body

    await send(worker, tasks.CREATE_CA, [r.body["id"]])
    view = await wait_until_settled(tenant.admin, r.body["id"], timeout=30)

    assert view["status"] == "failed", view
    row = await db.fetchrow("SELECT encrypted_private_key, error_message FROM certificate_authorities WHERE id = $1",
                            uuid.UUID(r.body["id"]))
    assert row["encrypted_private_key"] is None
    assert "parent CA is not active" in row["error_message"], row["error_message"]
