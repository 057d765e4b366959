"""DESIGN.md 5.6 revoke, 5.7 public CRLs, 7 and invariants 9 and 11: a revoked certificate is on its
CA's public CRL within 5 seconds with its reason, relying parties (openssl, pkilint) accept the CRL,
and the revocation shows everywhere the certificate does."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from cryptography import x509

from api.broker import Broker
from shared import tasks
from tests.api_client import ApiClient, Tenant, assert_problem
from tests.issuance.checkers import pkilint_errors, run
from tests.issuance.issuing import CERTIFICATES, outcome
from tests.lifecycle.revoking import crl_lint_errors, crl_listing, issue, public_crl, public_crl_der, revoke
from tests.pki_setup import PROFILES, REQUESTS, make_pki
from tests.stack import Stack


async def test_revoked_serial_is_on_the_public_crl_with_its_reason_within_5_seconds(
        worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "gone.example.test")
    r = await revoke(tenant.admin, str(view["certificateId"]), "KEY_COMPROMISE")
    assert r.status == 200, r.body
    assert r.body["serialNumber"] == view["serialNumber"] and r.body["revokedAt"]
    _, seconds = await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
    assert seconds < 5
    der = tmp_path / "crl.der"
    der.write_bytes(await public_crl_der(tenant.admin, pki.issuing_id))
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(der), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert str(view["serialNumber"]).upper().lstrip("0") in text.replace(":", "").upper()
    assert "Key Compromise" in text


async def test_unspecified_reason_leaves_the_entry_without_a_reason_code(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "plain.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]), "UNSPECIFIED")).status == 200
    crl, _ = await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
    entry = crl.get_revoked_certificate_by_serial_number(int(str(view["serialNumber"]), 16))
    assert entry is not None
    assert x509.CRLReason not in [type(e.value) for e in entry.extensions]


async def test_openssl_crl_check_fails_for_the_revoked_leaf_and_passes_for_another(
        worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    revoked = await issue(tenant.admin, pki, "revoked.example.test")
    live = await issue(tenant.admin, pki, "live.example.test")
    assert (await revoke(tenant.admin, str(revoked["certificateId"]))).status == 200
    await crl_listing(tenant.admin, pki.issuing_id, str(revoked["serialNumber"]))
    (tmp_path / "root.pem").write_text(pki.root_pem)
    (tmp_path / "issuing.pem").write_text(pki.issuing_pem)
    r = await tenant.admin.with_token(None).get(f"/api/v1/cert-manager/crl/{pki.issuing_id}")
    (tmp_path / "crl.pem").write_text(r.body)
    results = {}
    for name, view in (("revoked", revoked), ("live", live)):
        (tmp_path / f"{name}.pem").write_text(str(view["certificate"]))
        results[name] = await run("openssl", "verify", "-crl_check", "-CAfile", str(tmp_path / "root.pem"),
                                  "-untrusted", str(tmp_path / "issuing.pem"), "-CRLfile", str(tmp_path / "crl.pem"),
                                  str(tmp_path / f"{name}.pem"))
    assert results["live"][0] == 0, results["live"]
    assert results["revoked"][0] != 0 and "revoked" in results["revoked"][1], results["revoked"]


async def test_crl_this_update_precedes_next_update_and_next_update_is_in_the_future(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    crl = await public_crl(tenant.admin, pki.issuing_id)
    assert crl.next_update_utc is not None
    assert crl.last_update_utc < crl.next_update_utc
    assert crl.last_update_utc <= datetime.now(UTC) < crl.next_update_utc


async def test_crl_numbers_strictly_increase_with_each_revocation(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    numbers = [(await public_crl(tenant.admin, pki.issuing_id)).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number]
    for name in ("one.example.test", "two.example.test"):
        view = await issue(tenant.admin, pki, name)
        assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
        crl, _ = await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    assert numbers == sorted(set(numbers)) and len(numbers) == 3, numbers


async def test_crl_lints_clean_under_pkilint(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "lint.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]), "SUPERSEDED")).status == 200
    await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
    assert await crl_lint_errors(await public_crl_der(tenant.admin, pki.issuing_id)) == []


async def test_revoked_certificate_shows_revoked_everywhere(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "shown.example.test")
    cert_id = str(view["certificateId"])
    assert (await revoke(tenant.admin, cert_id, "CESSATION_OF_OPERATION")).status == 200
    meta = (await tenant.admin.get(f"{CERTIFICATES}/{cert_id}")).body["certificate"]
    assert (meta["status"], meta["revocationReason"]) == ("revoked", "CESSATION_OF_OPERATION")
    assert meta["revokedAt"]
    listed = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id})
    item = next(i for i in listed.body["certificateRequests"] if i["certificateId"] == cert_id)
    assert item["certificate"]["status"] == "revoked"
    profile = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates")
    assert next(c for c in profile.body["certificates"] if c["id"] == cert_id)["status"] == "revoked"
    only = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates", params={"status": "revoked"})
    assert [c["id"] for c in only.body["certificates"]] == [cert_id]


async def test_revoking_twice_is_409(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "twice.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
    assert_problem(await revoke(tenant.admin, str(view["certificateId"])), 409)


async def test_unknown_reason_is_422(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "reason.example.test")
    assert_problem(await revoke(tenant.admin, str(view["certificateId"]), "BORED"), 422)


async def test_viewer_cannot_revoke(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "viewer.example.test")
    viewer, _ = await tenant.identity("viewer")
    assert_problem(await revoke(viewer, str(view["certificateId"])), 403)


async def test_another_projects_certificate_is_404_on_revoke(worker: Stack, tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "theirs.example.test")
    other: Tenant = await make_tenant("beta")
    assert_problem(await revoke(other.admin, str(view["certificateId"])), 404)


async def test_revoked_certificate_cannot_be_renewed(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "renew.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
    assert_problem(await tenant.admin.post(f"{CERTIFICATES}/{view['certificateId']}/renew"), 400)


async def test_revocation_and_each_crl_leave_an_audit_event(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "audit.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]), "SUPERSEDED")).status == 200
    await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
    reasons = await db.fetch("SELECT details->>'reason' AS reason FROM audit_events"
                             " WHERE action = 'certificate.revoke' AND subject_id = $1", str(view["certificateId"]))
    assert [r["reason"] for r in reasons] == ["SUPERSEDED"]
    crls = await db.fetchval("SELECT count(*) FROM certificate_revocation_lists WHERE ca_id = $1::uuid",
                             pki.issuing_id)
    signed = await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'crl.sign' AND subject_id = $1",
                               pki.issuing_id)
    assert crls >= 2 and signed == crls


async def test_ca_certificate_is_public_der_at_the_aia_path(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    path = f"/api/v1/cert-manager/ca/internal/{pki.issuing_id}/certificates/{pki.issuing_id}/der"
    async with tenant.admin.session.get(tenant.admin.base + path) as resp:
        assert resp.status == 200 and resp.content_type == "application/pkix-cert"
        cert = x509.load_der_x509_certificate(await resp.read())
    assert cert == x509.load_pem_x509_certificate(pki.issuing_pem.encode())


async def test_crls_route_lists_the_current_crl_to_a_viewer(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    viewer, _ = await tenant.identity("viewer")
    r = await viewer.get(f"/api/v1/cert-manager/ca/internal/{pki.issuing_id}/crls")
    assert r.status == 200, r.body
    assert [item["id"] for item in r.body] == [pki.issuing_id]
    x509.load_pem_x509_crl(r.body[0]["crl"].encode())


async def test_crl_of_an_unknown_ca_is_404(worker: Stack, http: ApiClient) -> None:
    assert_problem(await http.get("/api/v1/cert-manager/crl/00000000-0000-4000-8000-000000000000/der"), 404)


async def test_issued_leaf_points_at_its_cas_public_crl_and_certificate(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "urls.example.test")
    leaf = x509.load_pem_x509_certificate(str(view["certificate"]).encode())
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    base = tenant.admin.base + "/api/v1/cert-manager"
    crl_url = cdp[0].full_name[0].value
    [ca_url] = [d.access_location.value for d in aia
                if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS]
    assert crl_url == f"{base}/crl/{pki.issuing_id}/der"
    assert ca_url == f"{base}/ca/internal/{pki.issuing_id}/certificates/{pki.issuing_id}/der"
    async with tenant.admin.session.get(crl_url) as resp:
        crl = x509.load_der_x509_crl(await resp.read())
    async with tenant.admin.session.get(ca_url) as resp:
        issuer = x509.load_der_x509_certificate(await resp.read())
    assert issuer == x509.load_pem_x509_certificate(pki.issuing_pem.encode())
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]


async def test_leaf_with_crl_and_aia_urls_lints_clean(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "lintleaf.example.test")
    assert await pkilint_errors(str(view["certificate"])) == []


async def test_a_crl_past_its_next_update_is_never_served_a_fresh_one_is(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    first = await public_crl(tenant.admin, pki.issuing_id)
    # As if every worker had been down past the CRL's nextUpdate.
    await db.execute("UPDATE certificate_revocation_lists SET this_update = now() - interval '2 hours',"
                     " next_update = now() - interval '1 hour' WHERE ca_id = $1::uuid", pki.issuing_id)
    served = await public_crl(tenant.admin, pki.issuing_id)
    assert served.next_update_utc is not None and served.next_update_utc > datetime.now(UTC)
    number = served.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


async def test_a_burst_of_revocations_is_all_on_the_crl_within_5_seconds(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    views = [await issue(tenant.admin, pki, f"burst{i}.example.test") for i in range(8)]
    answers = await asyncio.gather(*(revoke(tenant.admin, str(v["certificateId"])) for v in views))
    assert [a.status for a in answers] == [200] * len(views)
    start = time.monotonic()
    for view in views:
        await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]),
                          timeout=5 - (time.monotonic() - start))
    # One CRL when the CA was made, then at most one per revocation (a task finding them covered signs none).
    crls = await db.fetchval("SELECT count(*) FROM certificate_revocation_lists WHERE ca_id = $1::uuid",
                             pki.issuing_id)
    assert crls <= 1 + len(views)


async def test_a_crl_task_with_nothing_new_to_list_signs_no_crl(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "once.example.test")
    assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
    await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
    count = "SELECT count(*) FROM certificate_revocation_lists WHERE ca_id = $1::uuid"
    before = await db.fetchval(count, pki.issuing_id)
    broker = Broker(worker.broker_url)
    try:
        for _ in range(3):
            await broker.send(tasks.SIGN_CRL, [pki.issuing_id])
    finally:
        await broker.close()
    # The tasks run within moments: each finds the newest CRL covering every revocation.
    await asyncio.sleep(1.5)
    assert await db.fetchval(count, pki.issuing_id) == before


async def test_a_renewal_accepted_before_the_revocation_is_refused_by_the_worker(
        worker: Stack, tenant: Tenant, api_without_broker: str,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "race.example.test")
    # Accepted by an API whose broker is unreachable: stored pending, signed only when the bell rings.
    other_api = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    renewal = await other_api.post(f"{CERTIFICATES}/{view['certificateId']}/renew")
    assert renewal.status == 202, renewal.body
    assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
    await ring_doorbell(renewal.body["certificateRequestId"])
    result = await outcome(tenant.admin, renewal.body["certificateRequestId"])
    assert result["status"] == "failed" and "revoked" in result["errorMessage"], result
