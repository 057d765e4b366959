"""Validate twice (DESIGN.md 4.6): the worker decides against the policy and the CA as they are when it
signs, not as they were when the API accepted the request.

Each request here is submitted through ``api_without_broker``, so it sits ``pending`` in the database
and no worker hears of it; the test then tightens the policy or disables the CA, and only then sends
the task to the real broker (as the reconciler would).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import certificates_of_request, outcome, rows_of_project, server_key_attributes, submit
from tests.pki_setup import CA, POLICIES, REQUESTS, Pki, make_pki
from tests.stack import Stack

Doorbell = Callable[[str], Awaitable[None]]


async def pending_request(tenant: Tenant, api_without_broker: str, pki: Pki, name: str) -> str:
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    r = await submit(deaf, pki.profile_id, attributes=server_key_attributes(name))
    assert r.status == 202 and r.body["status"] == "pending", r.body
    request_id: str = r.body["certificateRequestId"]
    return request_id


async def status_of(client: ApiClient, request_id: str) -> str:
    r = await client.get(f"{REQUESTS}/{request_id}")
    assert r.status == 200, r.body
    status: str = r.body["status"]
    return status


async def test_request_fails_naming_the_rule_when_the_policy_tightens_before_the_worker_signs(
    worker: Stack, tenant: Tenant, api_without_broker: str, ring_doorbell: Doorbell, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    request_id = await pending_request(tenant, api_without_broker, pki, "app.example.test")
    tightened = await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}", {
        "subject": [{"type": "common_name", "allowed": ["*.internal.test"]}],
        "sans": [{"type": "dns_name", "allowed": ["*.internal.test"]}],
    })
    assert tightened.status == 200, tightened.body

    assert await status_of(tenant.admin, request_id) == "pending"  # no worker has seen it yet

    await ring_doorbell(request_id)
    view = await outcome(tenant.admin, request_id)

    assert view["status"] == "failed", view
    message = view["errorMessage"]
    assert "app.example.test" in message and "*.internal.test" in message, message
    assert "attributes.commonName" in message and "attributes.altNames" in message, message
    assert view["certificate"] is None and view["certificateId"] is None
    assert await certificates_of_request(db, request_id) == 0


async def test_request_fails_naming_the_ca_when_the_ca_is_disabled_before_the_worker_signs(
    worker: Stack, tenant: Tenant, api_without_broker: str, ring_doorbell: Doorbell, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id, slug="disabled")
    request_id = await pending_request(tenant, api_without_broker, pki, "app.example.test")
    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    assert disabled.status == 200 and disabled.body["status"] == "disabled", disabled.body

    assert await status_of(tenant.admin, request_id) == "pending"  # no worker has seen it yet

    await ring_doorbell(request_id)
    view = await outcome(tenant.admin, request_id)

    assert view["status"] == "failed", view
    message = view["errorMessage"]
    assert "CA 'disabled-issuing' is disabled" in message, message
    assert view["certificate"] is None and view["certificateId"] is None
    assert await certificates_of_request(db, request_id) == 0


async def test_submitting_to_a_profile_whose_ca_is_disabled_is_refused_at_once_with_400(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    assert disabled.status == 200, disabled.body

    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("app.example.test"))

    assert r.status == 400 and r.is_problem(), (r.status, r.body)
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert [e["field"] for e in r.body["errors"]] == ["profileId"]
    assert "disabled" in r.body["errors"][0]["message"]
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}
