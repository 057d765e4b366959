"""Renewal (a new key and serial for the same names, linked both ways; only for server-generated keys)
and who may read what: a viewer never sees a private key, another project sees nothing at all (404),
and an issuer of the project gets the key that belongs to the certificate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.api_client import ApiClient, Tenant
from tests.issuance.csrs import make_csr, spki_der
from tests.issuance.issuing import (
    CERTIFICATES,
    MakeTenant,
    issued,
    outcome,
    rows_of_project,
    server_key_attributes,
    submit,
)
from tests.pki_setup import CA, REQUESTS, Pki, make_pki
from tests.stack import Stack

NAMES = server_key_attributes("renew.example.test", altNames=[
    {"type": "dns_name", "value": "renew.example.test"}, {"type": "dns_name", "value": "www.renew.example.test"},
    {"type": "ip_address", "value": "127.0.0.1"}])


def certificate(view: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(view["certificate"].encode())


def sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def key_matches(private_key_pem: str, cert: x509.Certificate) -> bool:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return spki_der(key.public_key()) == spki_der(cert.public_key())


async def server_key_certificate(client: ApiClient, pki: Pki) -> dict[str, Any]:
    return await issued(client, pki.profile_id, attributes=NAMES)


async def test_renewal_gives_a_new_serial_and_key_for_the_same_names_linked_both_ways(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    old = await server_key_certificate(tenant.admin, pki)

    r = await tenant.admin.post(f"{CERTIFICATES}/{old['certificateId']}/renew", params={"wait": "10"})

    assert r.status == 200 and r.body["status"] == "issued", (r.status, r.body)
    new = r.body  # flat: the certificate, its key and ids, and the renewal's request
    assert new["certificateRequestId"] != old["certificateRequestId"]
    assert new["certificateId"] != old["certificateId"]
    old_cert, new_cert = certificate(old), certificate(new)
    assert new_cert.serial_number != old_cert.serial_number and new["serialNumber"] != old["serialNumber"]
    assert spki_der(new_cert.public_key()) != spki_der(old_cert.public_key())
    assert new_cert.subject == old_cert.subject
    assert sans(new_cert) == sans(old_cert) and len(sans(new_cert)) == 3
    assert new["privateKey"] != old["privateKey"] and key_matches(new["privateKey"], new_cert)
    old_meta = await tenant.admin.get(f"{CERTIFICATES}/{old['certificateId']}")
    new_meta = await tenant.admin.get(f"{CERTIFICATES}/{new['certificateId']}")
    old_meta, new_meta = old_meta.body["certificate"], new_meta.body["certificate"]
    assert old_meta["renewedByCertificateId"] == new["certificateId"] and old_meta["renewedFromCertificateId"] is None
    assert new_meta["renewedFromCertificateId"] == old["certificateId"] and new_meta["renewedByCertificateId"] is None
    assert new_meta["profileId"] == old_meta["profileId"] == pki.profile_id
    assert old_meta["status"] == new_meta["status"] == "active"  # the old certificate stays active


async def test_renewing_a_certificate_issued_from_a_csr_is_a_400_problem_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, csr=make_csr(cn="csr.example.test"))
    before = await rows_of_project(db, tenant.project_id)

    r = await tenant.admin.post(f"{CERTIFICATES}/{view['certificateId']}/renew", params={"wait": "10"})

    assert r.status == 400 and r.is_problem(), (r.status, r.body)
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert [e["field"] for e in r.body["errors"]] == ["certificateId"]
    assert await rows_of_project(db, tenant.project_id) == before
    meta = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}")
    assert meta.body["certificate"]["renewedByCertificateId"] is None
    assert meta.body["certificate"]["hasPrivateKey"] is False


async def test_renewal_of_a_certificate_with_a_fixed_window_gets_a_window_of_the_same_length_from_now(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    now = datetime.now(UTC).replace(microsecond=0)
    # A window that starts in the future (one cannot start before its CA, which was made just now).
    window = server_key_attributes("window.example.test", notBefore=(now + timedelta(days=2)).isoformat(),
                                   notAfter=(now + timedelta(days=12)).isoformat())
    view = await issued(tenant.admin, pki.profile_id, attributes=window)
    old = certificate(view)

    r = await tenant.admin.post(f"{CERTIFICATES}/{view['certificateId']}/renew", params={"wait": "10"})

    assert r.status == 200, (r.status, r.body)
    new = certificate(r.body)
    # Not the same window again (it would expire with the certificate it replaces): ten days from now.
    assert old.not_valid_before_utc - new.not_valid_before_utc > timedelta(days=1)
    length = new.not_valid_after_utc - new.not_valid_before_utc
    assert timedelta(days=10) <= length <= timedelta(days=10, hours=1), length


async def test_renewal_when_the_ca_is_disabled_is_refused_at_once_with_400(
    worker: Stack, tenant: Tenant, api_without_broker: str, ring_doorbell: Callable[[str], Awaitable[None]],
    db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    # Issued through the second API process (and the doorbell), so that the API answering the renewal
    # below has never cached this profile and sees the CA's new status at once.
    other_api = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    submitted = await submit(other_api, pki.profile_id, attributes=NAMES)
    await ring_doorbell(submitted.body["certificateRequestId"])
    view = await outcome(tenant.admin, submitted.body["certificateRequestId"])
    assert view["status"] == "issued", view
    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    assert disabled.status == 200, disabled.body
    before = await rows_of_project(db, tenant.project_id)

    r = await tenant.admin.post(f"{CERTIFICATES}/{view['certificateId']}/renew", params={"wait": "10"})

    assert r.status == 400 and r.is_problem(), (r.status, r.body)
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert [e["field"] for e in r.body["errors"]] == ["profileId"] and "disabled" in r.body["detail"]
    assert await rows_of_project(db, tenant.project_id) == before


async def test_viewer_reads_the_request_and_certificate_but_never_a_private_key(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)
    viewer, _ = await tenant.identity("viewer")
    cert_path = f"{CERTIFICATES}/{view['certificateId']}"

    request = await viewer.get(f"{REQUESTS}/{view['certificateRequestId']}", params={"wait": "1"})
    meta = await viewer.get(cert_path)
    pem = await viewer.get(f"{cert_path}/certificate")
    bundle = await viewer.get(f"{cert_path}/bundle")
    key = await viewer.get(f"{cert_path}/private-key")

    assert request.status == 200 and request.body["certificate"] == view["certificate"]
    assert request.body["privateKey"] is None
    assert meta.status == 200 and meta.body["certificate"]["hasPrivateKey"] is True
    assert pem.status == 200 and pem.body["certificate"] == view["certificate"] and pem.body.get("privateKey") is None
    assert bundle.status == 200 and bundle.body["certificate"] == view["certificate"]
    assert bundle.body["privateKey"] is None
    assert key.status == 403 and key.is_problem(), (key.status, key.body)
    replies = (request, meta, pem, bundle, key)
    assert all("PRIVATE KEY" not in str(r.body) for r in replies)


async def test_viewer_cannot_renew(worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)
    viewer, _ = await tenant.identity("viewer")
    before = await rows_of_project(db, tenant.project_id)

    r = await viewer.post(f"{CERTIFICATES}/{view['certificateId']}/renew")

    assert r.status == 403 and r.is_problem(), (r.status, r.body)
    assert await rows_of_project(db, tenant.project_id) == before


async def test_issuer_of_another_project_gets_404_for_the_request_and_everything_about_the_certificate(
    worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    owner: Tenant = await make_tenant("owner")
    other: Tenant = await make_tenant("other")
    pki = await make_pki(owner.admin, owner.project_id)
    view = await server_key_certificate(owner.admin, pki)
    intruder, _ = await other.identity("issuer")
    cert_path = f"{CERTIFICATES}/{view['certificateId']}"
    before = await rows_of_project(db, owner.project_id)

    replies = {
        "request": await intruder.get(f"{REQUESTS}/{view['certificateRequestId']}"),
        "request-wait": await intruder.get(f"{REQUESTS}/{view['certificateRequestId']}", params={"wait": "1"}),
        "list": await intruder.get(REQUESTS, params={"projectId": owner.project_id}),
        "certificate": await intruder.get(cert_path),
        "pem": await intruder.get(f"{cert_path}/certificate"),
        "bundle": await intruder.get(f"{cert_path}/bundle"),
        "private-key": await intruder.get(f"{cert_path}/private-key"),
        "renew": await intruder.post(f"{cert_path}/renew", params={"wait": "1"}),
    }

    for what, r in replies.items():
        assert r.status == 404 and r.is_problem(), (what, r.status, r.body)
        assert view["certificate"] not in str(r.body) and "PRIVATE KEY" not in str(r.body), what
    assert await rows_of_project(db, owner.project_id) == before


async def test_issuer_of_the_project_gets_the_private_key_that_matches_the_certificate(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await server_key_certificate(tenant.admin, pki)
    issuer, _ = await tenant.identity("issuer")
    cert_path = f"{CERTIFICATES}/{view['certificateId']}"

    key = await issuer.get(f"{cert_path}/private-key")
    bundle = await issuer.get(f"{cert_path}/bundle")
    request = await issuer.get(f"{REQUESTS}/{view['certificateRequestId']}")

    assert key.status == 200 and key.content_type == "text/plain", (key.status, key.body)
    assert key_matches(key.body, certificate(view))
    assert bundle.status == 200 and bundle.body["privateKey"] == key.body
    assert request.status == 200 and request.body["privateKey"] == key.body
    assert view["privateKey"] == key.body  # the same key every time, not a new one


async def test_private_key_of_a_certificate_issued_from_a_csr_is_404_the_service_never_held_it(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, csr=make_csr(cn="csr.example.test"))

    r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}/private-key")

    assert r.status == 404 and r.is_problem(), (r.status, r.body)
    bundle = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}/bundle")
    assert bundle.status == 200 and bundle.body["privateKey"] is None
