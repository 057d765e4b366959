"""``Idempotency-Key`` on submit: a retried request is the same request (one certificate, ever), a key
reused with another body is a conflict, and keys are scoped to their project."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import (
    MakeTenant,
    certificates_of_request,
    outcome,
    rows_of_project,
    server_key_attributes,
    submit,
)
from tests.pki_setup import ISSUE, POLICIES, make_pki
from tests.stack import Stack


async def test_same_key_and_body_twice_is_one_request_and_one_certificate(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())
    attributes = server_key_attributes("once.example.test")

    first = await submit(tenant.admin, pki.profile_id, attributes=attributes, idempotency_key=key, wait=10)
    second = await submit(tenant.admin, pki.profile_id, attributes=attributes, idempotency_key=key, wait=10)

    assert first.status == 200 and second.status == 200, (first.body, second.body)
    assert second.body["certificateRequestId"] == first.body["certificateRequestId"]
    assert second.body["certificate"]["certificateId"] == first.body["certificate"]["certificateId"]
    assert second.body["certificate"]["serialNumber"] == first.body["certificate"]["serialNumber"]
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 1, "certificates": 1}


async def test_ten_concurrent_retries_with_one_key_are_one_request_and_one_certificate(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())
    attributes = server_key_attributes("burst.example.test")

    replies = await asyncio.gather(*(submit(tenant.admin, pki.profile_id, attributes=attributes,
                                            idempotency_key=key) for _ in range(10)))

    assert {r.status for r in replies} <= {200, 202}, [(r.status, r.body) for r in replies]
    ids = {r.body["certificateRequestId"] for r in replies}
    assert len(ids) == 1, ids
    (request_id,) = ids
    assert (await outcome(tenant.admin, request_id))["status"] == "issued"
    assert await certificates_of_request(db, request_id) == 1
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 1, "certificates": 1}


async def test_same_key_with_another_body_is_a_409_problem_and_changes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())
    first = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("one.example.test"),
                         idempotency_key=key, wait=10)
    assert first.status == 200, first.body
    before = await rows_of_project(db, tenant.project_id)

    other = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("two.example.test"),
                         idempotency_key=key, wait=10)

    assert other.status == 409 and other.is_problem(), (other.status, other.body)
    assert [e["field"] for e in other.body["errors"]] == ["Idempotency-Key"]
    assert await rows_of_project(db, tenant.project_id) == before


async def test_same_key_in_another_project_is_an_independent_request(
    worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    a: Tenant = await make_tenant("idem-a")
    b: Tenant = await make_tenant("idem-b")
    pki_a = await make_pki(a.admin, a.project_id)
    pki_b = await make_pki(b.admin, b.project_id)
    key = str(uuid.uuid4())
    attributes = server_key_attributes("shared.example.test")

    in_a = await submit(a.admin, pki_a.profile_id, attributes=attributes, idempotency_key=key, wait=10)
    in_b = await submit(b.admin, pki_b.profile_id, attributes=attributes, idempotency_key=key, wait=10)

    assert in_a.status == 200 and in_b.status == 200, (in_a.body, in_b.body)
    assert in_a.body["certificateRequestId"] != in_b.body["certificateRequestId"]
    assert in_a.body["certificate"]["serialNumber"] != in_b.body["certificate"]["serialNumber"]
    for tenant in (a, b):
        assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 1, "certificates": 1}


async def test_retry_after_the_policy_tightened_returns_the_original_request_not_a_refusal(
    worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    key = str(uuid.uuid4())
    attributes = server_key_attributes("kept.example.test")
    first = await submit(tenant.admin, pki.profile_id, attributes=attributes, idempotency_key=key, wait=10)
    assert first.status == 200, first.body
    tightened = await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}",
                                         {"sans": [{"type": "dns_name", "allowed": ["*.internal.test"]}]})
    assert tightened.status == 200, tightened.body

    # The retry goes to a second API process: its profile cache never held this profile, so it sees the
    # tightened policy at once (the first process may serve its cached copy for a moment).
    other_api = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    retry = await submit(other_api, pki.profile_id, attributes=attributes, idempotency_key=key, wait=10)

    assert retry.status == 200, (retry.status, retry.body)
    assert retry.body["certificateRequestId"] == first.body["certificateRequestId"]
    assert retry.body["certificate"]["certificateId"] == first.body["certificate"]["certificateId"]
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 1, "certificates": 1}
    fresh = await submit(other_api, pki.profile_id, attributes=attributes, idempotency_key=str(uuid.uuid4()))
    # Without the key it is a new request, and the policy refuses it.
    assert fresh.status == 400 and fresh.body["type"].endswith("/policy-violation"), fresh.body


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\tinside"], ids=["empty", "256-characters", "control-character"])
async def test_idempotency_key_that_is_not_1_to_255_printable_characters_is_a_400_problem(
    key: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    r = await tenant.admin.post(ISSUE,
                                {"profileId": pki.profile_id, "attributes": server_key_attributes("k.example.test")},
                                headers={"Idempotency-Key": key})

    assert r.status == 400 and r.is_problem(), (r.status, r.body)
    assert [e["field"] for e in r.body["errors"]] == ["Idempotency-Key"]
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}
