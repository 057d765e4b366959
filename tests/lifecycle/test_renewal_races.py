"""DESIGN.md 7, "at most once per certificate": a renewal by hand (POST /certificates/{id}/renew) and the
server-driven renewal scan never renew one certificate twice at once. Whichever registers first, the
other finds it under way: a renewal asked by hand while the scan's is pending answers with the scan's
request, and the scan skips a certificate whose renewal by hand is pending. Exactly one successor is
signed, and it alone is linked (renewedByCertificateId / renewedFromCertificateId).

The scan is the worker's own function (``worker.renewal.schedule_renewals``) run in this process against
the session's database, its task messages held back; renewals by hand go through an API whose broker
is unreachable. So nothing is signed until the race is over, and the test then rings the real broker and
watches the session's worker sign what was registered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from shared.config import Settings
from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import CERTIFICATES, outcome
from tests.lifecycle.test_auto_renewal import auto_renewing_pki, fall_due, metadata, server_key_certificate
from tests.pki_setup import OPEN_POLICY, POLICIES
from tests.stack import Stack
from worker.renewal import Renewed, schedule_renewals
from worker.runtime import Runtime


class Scan:
    """The renewal scan as beat runs it, with the request ids it would send to the workers kept here."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sent: list[str] = []

    async def run(self) -> Renewed:
        return await schedule_renewals(self.rt, send_requests=self.sent.extend)


@pytest.fixture
async def scan(worker: Stack) -> AsyncIterator[Scan]:
    rt = Runtime(Settings(database_url=worker.database_url, root_key=None, root_key_file=worker.root_key_file,
                          ca_root_key=None, ca_root_key_file=worker.ca_root_key_file))
    try:
        yield Scan(rt)
    finally:
        await (await rt.pool()).close()


@pytest.fixture
def held_back(tenant: Tenant, api_without_broker: str) -> ApiClient:
    """The tenant's admin on the API whose task messages never leave it: a renewal asked here stays pending."""
    return ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)


async def renew(client: ApiClient, certificate_id: str) -> str:
    r = await client.post(f"{CERTIFICATES}/{certificate_id}/renew")
    assert r.status == 202, r.body
    request_id: str = r.body["certificateRequestId"]
    return request_id


async def renewal_requests(db: asyncpg.Connection, certificate_id: str) -> list[str]:
    rows = await db.fetch("SELECT id FROM certificate_requests WHERE renewal_of = $1::uuid ORDER BY created_at",
                          certificate_id)
    return [str(r["id"]) for r in rows]


async def successors(db: asyncpg.Connection, certificate_id: str) -> list[str]:
    rows = await db.fetch("SELECT id FROM certificates WHERE renewed_from_id = $1::uuid", certificate_id)
    return [str(r["id"]) for r in rows]


async def sign(ring_doorbell: Callable[[str], Awaitable[None]], db: asyncpg.Connection, tenant: Tenant,
               request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Send each request to the real broker, as the reconciler would, and wait for the outcome of the
    tenant's (the scan also registers what other tests of the session left due)."""
    for request_id in request_ids:
        await ring_doorbell(request_id)
    ours = await db.fetch("SELECT id FROM certificate_requests WHERE id = ANY($1::uuid[]) AND project_id = $2::uuid",
                          request_ids, tenant.project_id)
    return {str(r["id"]): await outcome(tenant.admin, str(r["id"])) for r in ours}


async def assert_renewed_once(db: asyncpg.Connection, client: ApiClient, certificate_id: str) -> str:
    """Exactly one renewal request and one successor, linked both ways; returns the successor's id."""
    assert len(await renewal_requests(db, certificate_id)) == 1, await renewal_requests(db, certificate_id)
    found = await successors(db, certificate_id)
    assert len(found) == 1, found
    assert (await metadata(client, certificate_id))["renewedByCertificateId"] == found[0]
    assert (await metadata(client, found[0]))["renewedFromCertificateId"] == certificate_id
    return found[0]


async def test_a_renew_by_hand_while_the_servers_renewal_is_pending_answers_with_that_renewal(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection, scan: Scan,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    await fall_due(db, old["certificateId"])
    await scan.run()
    [scheduled] = await renewal_requests(db, old["certificateId"])

    by_hand = await renew(tenant.admin, old["certificateId"])

    assert by_hand == scheduled
    results = await sign(ring_doorbell, db, tenant, scan.sent)
    assert results[scheduled]["status"] == "issued", results[scheduled]
    assert await assert_renewed_once(db, tenant.admin, old["certificateId"]) == results[scheduled]["certificateId"]


async def test_the_scan_skips_a_certificate_whose_renewal_by_hand_is_pending(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection, scan: Scan, held_back: ApiClient,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    by_hand = await renew(held_back, old["certificateId"])
    await fall_due(db, old["certificateId"])

    await scan.run()

    assert await renewal_requests(db, old["certificateId"]) == [by_hand]
    results = await sign(ring_doorbell, db, tenant, [by_hand, *scan.sent])
    assert results[by_hand]["status"] == "issued", results[by_hand]
    await scan.run()  # renewed now: the next scans leave it alone too
    assert await assert_renewed_once(db, tenant.admin, old["certificateId"]) == results[by_hand]["certificateId"]


async def test_two_renewals_by_hand_at_once_make_one_successor(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection, held_back: ApiClient,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)

    first, second = await asyncio.gather(renew(held_back, old["certificateId"]), renew(held_back, old["certificateId"]))

    assert first == second
    assert (await sign(ring_doorbell, db, tenant, [first]))[first]["status"] == "issued"
    await assert_renewed_once(db, tenant.admin, old["certificateId"])


async def test_renewals_by_hand_racing_the_scan_renew_every_certificate_exactly_once(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection, scan: Scan, held_back: ApiClient,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await auto_renewing_pki(tenant)
    olds = [(await server_key_certificate(tenant.admin, pki))["certificateId"] for _ in range(12)]
    for certificate_id in olds:
        await fall_due(db, certificate_id)

    # Two renewals by hand of every certificate and two scans, all at the same moment.
    answers = await asyncio.gather(*(renew(held_back, c) for c in olds for _ in range(2)), scan.run(), scan.run())

    by_hand = [a for a in answers if isinstance(a, str)]
    registered = {c: await renewal_requests(db, c) for c in olds}
    assert all(len(ids) == 1 for ids in registered.values()), registered
    assert set(by_hand) <= {ids[0] for ids in registered.values()}
    results = await sign(ring_doorbell, db, tenant, sorted({*by_hand, *scan.sent}))
    assert all(r["status"] == "issued" for r in results.values()), results
    for certificate_id in olds:
        await assert_renewed_once(db, tenant.admin, certificate_id)


async def test_a_renewal_by_hand_that_fails_leaves_the_certificate_to_the_scan(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection, scan: Scan, held_back: ApiClient,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    by_hand = await renew(held_back, old["certificateId"])
    narrow = {**OPEN_POLICY, "sans": [{"type": "dns_name", "allowed": ["only.example.test"]}]}
    assert (await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}", narrow)).status == 200
    assert (await sign(ring_doorbell, db, tenant, [by_hand]))[by_hand]["status"] == "failed"
    # The failure answered its caller; it is no renewal error of the certificate's own renewal.
    assert (await metadata(tenant.admin, old["certificateId"]))["renewalError"] is None
    assert (await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}", OPEN_POLICY)).status == 200
    await fall_due(db, old["certificateId"])

    await scan.run()

    [_, scheduled] = await renewal_requests(db, old["certificateId"])
    assert (await sign(ring_doorbell, db, tenant, scan.sent))[scheduled]["status"] == "issued"
    assert await successors(db, old["certificateId"]) == [(await outcome(tenant.admin, scheduled))["certificateId"]]
