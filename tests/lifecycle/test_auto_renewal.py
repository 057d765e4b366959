"""Server-driven renewal (DESIGN.md 7) with the session's real worker and a real beat that scans every
second: a certificate inside its renewal window is renewed once, through the ordinary pipeline, and
never again; a CSR-issued one never; a renewal the policy of the moment refuses records renewalError
and is not retried; PATCH /certificates/{id}/config changes the setting per certificate.

Certificates are issued with a profile that auto-renews 1 day before expiry (a 3-day lifetime keeps the
stamp as is); a test then brings the due date forward in the database, as time would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from cryptography import x509

from tests.api_client import ApiClient, Tenant
from tests.issuance.csrs import make_csr
from tests.issuance.issuing import CERTIFICATES, MakeTenant, issued, server_key_attributes
from tests.pki_setup import OPEN_POLICY, POLICIES, PROFILES, Pki, make_pki
from tests.stack import Stack

NAME = "auto.example.test"
# Long enough for the beat to have scanned several times (it runs every second).
SCANS = 4.0


@pytest.fixture(scope="module")
def beat(worker: Stack) -> Iterator[Stack]:
    worker.start_beat(env={"KMS_RENEWAL_INTERVAL_SECONDS": "1"})
    try:
        yield worker
    finally:
        worker.stop("beat")


async def auto_renewing_pki(tenant: Tenant, renew_before_days: int = 1) -> Pki:
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await tenant.admin.patch(f"{PROFILES}/{pki.profile_id}",
                                 {"apiConfig": {"autoRenew": True, "renewBeforeDays": renew_before_days}})
    assert r.status == 200, r.body
    return pki


async def server_key_certificate(client: ApiClient, pki: Pki, ttl: str = "3d") -> dict[str, Any]:
    return await issued(client, pki.profile_id, attributes=server_key_attributes(NAME, ttl=ttl))


async def metadata(client: ApiClient, certificate_id: str) -> dict[str, Any]:
    r = await client.get(f"{CERTIFICATES}/{certificate_id}")
    assert r.status == 200, r.body
    found: dict[str, Any] = r.body["certificate"]
    return found


async def fall_due(db: asyncpg.Connection, certificate_id: str) -> None:
    await db.execute("UPDATE certificates SET renewal_due_at = now() - interval '1 second' WHERE id = $1::uuid",
                     certificate_id)


async def until(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.25)


async def renewal_of(db: asyncpg.Connection, certificate_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM certificates WHERE renewed_from_id = $1::uuid", certificate_id)
    return row


async def requests_renewing(db: asyncpg.Connection, certificate_id: str) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM certificate_requests WHERE renewal_of = $1::uuid", certificate_id)
    return n


async def test_a_certificate_is_stamped_with_its_profiles_renewal_setting(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant, renew_before_days=1)
    view = await server_key_certificate(tenant.admin, pki)

    meta = await metadata(tenant.admin, view["certificateId"])
    row = await db.fetchrow("SELECT auto_renew, renewal_due_at, not_after FROM certificates WHERE id = $1::uuid",
                            view["certificateId"])
    assert meta["renewBeforeDays"] == 1
    assert row["auto_renew"] and (row["not_after"] - row["renewal_due_at"]).days == 1


async def test_a_renew_before_longer_than_the_lifetime_is_clamped_and_one_within_a_day_dropped(
        worker: Stack, tenant: Tenant) -> None:
    pki = await auto_renewing_pki(tenant, renew_before_days=30)

    three_days = await server_key_certificate(tenant.admin, pki, ttl="3d")
    one_day = await server_key_certificate(tenant.admin, pki, ttl="1d")

    assert (await metadata(tenant.admin, three_days["certificateId"]))["renewBeforeDays"] == 2
    assert (await metadata(tenant.admin, one_day["certificateId"]))["renewBeforeDays"] is None


async def test_a_due_certificate_is_renewed_once_with_a_new_key_and_the_same_names_linked_both_ways(
        beat: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    await fall_due(db, old["certificateId"])

    new_row = await until(lambda: renewal_of(db, old["certificateId"]))
    assert new_row is not None, "not renewed within 30 s"
    await asyncio.sleep(SCANS)

    old_meta = await metadata(tenant.admin, old["certificateId"])
    new_meta = await metadata(tenant.admin, str(new_row["id"]))
    assert old_meta["renewedByCertificateId"] == str(new_row["id"])
    assert new_meta["renewedFromCertificateId"] == old["certificateId"]
    assert old_meta["status"] == "active"
    assert new_meta["commonName"] == NAME and new_meta["altNames"] == old_meta["altNames"]
    old_key = x509.load_pem_x509_certificate(old["certificate"].encode()).public_key()
    new_key = x509.load_pem_x509_certificate(new_row["certificate_pem"].encode()).public_key()
    assert old_key != new_key
    assert await requests_renewing(db, old["certificateId"]) == 1


async def test_a_scheduled_renewal_is_audited(beat: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    await fall_due(db, old["certificateId"])

    assert await until(lambda: renewal_of(db, old["certificateId"])) is not None

    actions = await db.fetch("SELECT action FROM audit_events WHERE subject_id = $1", old["certificateId"])
    assert "certificate.renewal.scheduled" in [a["action"] for a in actions]


async def test_a_csr_issued_certificate_is_never_renewed(beat: Stack, tenant: Tenant, db: asyncpg.Connection
                                                          ) -> None:
    pki = await auto_renewing_pki(tenant)
    csr = make_csr(cn=NAME)
    view = await issued(tenant.admin, pki.profile_id, csr=csr, attributes={"ttl": "3d"})
    await db.execute("UPDATE certificates SET auto_renew = true, renew_before_days = 1 WHERE id = $1::uuid",
                     view["certificateId"])
    await fall_due(db, view["certificateId"])

    await asyncio.sleep(SCANS)

    assert (await metadata(tenant.admin, view["certificateId"]))["renewBeforeDays"] is not None  # was eligible
    assert await requests_renewing(db, view["certificateId"]) == 0


async def test_a_revoked_certificate_is_never_renewed(beat: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant)
    view = await server_key_certificate(tenant.admin, pki)
    # Revocation has its own change; its column is what the scan reads.
    await db.execute("UPDATE certificates SET revoked_at = now() WHERE id = $1::uuid", view["certificateId"])
    await fall_due(db, view["certificateId"])

    await asyncio.sleep(SCANS)

    assert await requests_renewing(db, view["certificateId"]) == 0


async def test_a_renewal_the_tightened_policy_refuses_records_renewal_error_and_is_not_retried(
        beat: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    narrow = {**OPEN_POLICY, "sans": [{"type": "dns_name", "allowed": ["only.example.test"]}]}
    r = await tenant.admin.patch(f"{POLICIES}/{pki.policy_id}", narrow)
    assert r.status == 200, r.body
    await fall_due(db, old["certificateId"])

    async def error() -> str | None:
        return (await metadata(tenant.admin, old["certificateId"]))["renewalError"]  # type: ignore[no-any-return]

    message = await until(error)
    await asyncio.sleep(SCANS)

    assert message is not None and "matches no allowed pattern" in message, message
    assert await requests_renewing(db, old["certificateId"]) == 0
    assert (await metadata(tenant.admin, old["certificateId"]))["status"] == "active"
    failures = await db.fetchval("SELECT count(*) FROM audit_events WHERE subject_id = $1"
                                 " AND action = 'certificate.renewal.failed'", old["certificateId"])
    assert failures == 1


async def test_a_renewal_the_worker_fails_records_renewal_error_on_the_old_certificate(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    # The request the scan registered, failed by the worker's fail path (as when the policy is tightened
    # between the scan and the signature): the reconciler's give-up takes the same statement.
    from shared.db import requests as requests_db

    pki = await auto_renewing_pki(tenant)
    old = await server_key_certificate(tenant.admin, pki)
    request_id = await db.fetchval(
        "INSERT INTO certificate_requests (project_id, profile_id, server_key, remove_roots, renewal_of)"
        " VALUES ($1::uuid, $2::uuid, true, false, $3::uuid) RETURNING id",
        tenant.project_id, pki.profile_id, old["certificateId"])
    await db.execute("UPDATE certificates SET renewal_request_id = $2 WHERE id = $1::uuid", old["certificateId"],
                     request_id)

    assert await requests_db.finish_failed(db, request_id, None, "the policy no longer allows it")

    assert (await metadata(tenant.admin, old["certificateId"]))["renewalError"] == "the policy no longer allows it"


async def test_patch_config_sets_renew_before_days(worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(NAME, ttl="10d"))
    cert = f"{CERTIFICATES}/{view['certificateId']}"

    r = await tenant.admin.patch(f"{cert}/config", {"renewBeforeDays": 5})

    assert r.status == 200, r.body
    assert r.body["renewBeforeDays"] == 5 and r.body["message"]
    assert (await metadata(tenant.admin, view["certificateId"]))["renewBeforeDays"] == 5
    row = await db.fetchrow("SELECT auto_renew, renewal_due_at, not_after FROM certificates WHERE id = $1::uuid",
                            view["certificateId"])
    assert row["auto_renew"] and (row["not_after"] - row["renewal_due_at"]).days == 5


async def test_patch_config_refuses_a_renew_before_that_leaves_less_than_a_day(worker: Stack, tenant: Tenant
                                                                                ) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(NAME, ttl="3d"))

    r = await tenant.admin.patch(f"{CERTIFICATES}/{view['certificateId']}/config", {"renewBeforeDays": 3})

    assert r.status == 400, r.body


async def test_patch_config_refuses_out_of_range_days(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)

    r = await tenant.admin.patch(f"{CERTIFICATES}/{view['certificateId']}/config", {"renewBeforeDays": 31})

    assert r.status == 422, r.body


async def test_disabling_auto_renewal_stops_the_renewal_of_a_due_certificate(
        beat: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await auto_renewing_pki(tenant)
    view = await server_key_certificate(tenant.admin, pki)

    r = await tenant.admin.patch(f"{CERTIFICATES}/{view['certificateId']}/config", {"enableAutoRenewal": False})
    assert r.status == 200, r.body
    await db.execute("UPDATE certificates SET renewal_due_at = now() - interval '1 second' WHERE id = $1::uuid",
                     view["certificateId"])
    await asyncio.sleep(SCANS)

    assert (await metadata(tenant.admin, view["certificateId"]))["renewBeforeDays"] is None
    assert await requests_renewing(db, view["certificateId"]) == 0


async def test_a_viewer_cannot_change_a_certificates_config(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)
    viewer, _ = await tenant.identity("viewer")

    r = await viewer.patch(f"{CERTIFICATES}/{view['certificateId']}/config", {"enableAutoRenewal": False})

    assert r.status == 403, r.body


async def test_another_projects_certificate_config_is_not_found(worker: Stack, tenant: Tenant,
                                                               make_tenant: MakeTenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)
    other = await make_tenant("beta")

    r = await other.admin.patch(f"{CERTIFICATES}/{view['certificateId']}/config", {"enableAutoRenewal": False})

    assert r.status == 404, r.body
