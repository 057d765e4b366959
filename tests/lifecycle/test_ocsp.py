"""DESIGN.md 5.7 and 7, invariant 9: the OCSP responder at /api/v1/cert-manager/ocsp/{caId}, as relying
parties use it (`openssl ocsp`, GET and POST, SHA-1 and SHA-256 CertIDs), answers `good`, `revoked`
(within 5 seconds of the revocation, with its time and reason) and `unknown`, signed by a delegated
responder certificate a worker issued from the CA, and lints clean under pkilint."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from api.broker import Broker
from shared import tasks
from tests.api_client import ApiClient, Tenant
from tests.issuance.checkers import run
from tests.lifecycle.revoking import issue, revoke
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack

OCSP = "/api/v1/cert-manager/ocsp"
LINT_OCSP = str(Path(sys.executable).with_name("lint_ocsp_response"))


def leaf_of(view: dict[str, object]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(str(view["certificate"]).encode())


def issuing_of(pki: Pki) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.issuing_pem.encode())


def request_for(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None,
                nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())  # noqa: S303 - OCSP CertIDs are SHA-1 by default
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def request_by_serial(serial: int, issuer: x509.Certificate) -> bytes:
    name_hash = hashes.Hash(hashes.SHA1())  # noqa: S303 - a CertID hash  # noqa: S303 - OCSP CertIDs are SHA-1 by default
    name_hash.update(issuer.subject.public_bytes())
    key_hash = hashes.Hash(hashes.SHA1())  # noqa: S303 - a CertID hash  # noqa: S303 - OCSP CertIDs are SHA-1 by default
    key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.X962,  # type: ignore[union-attr]
                                                      serialization.PublicFormat.UncompressedPoint))
    return ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash.finalize(), key_hash.finalize(), serial, hashes.SHA1(),  # noqa: S303 - a CertID hash
    ).build().public_bytes(serialization.Encoding.DER)


async def post(client: ApiClient, ca_id: str, der: bytes) -> tuple[int, str, bytes]:
    async with client.session.post(f"{client.base}{OCSP}/{ca_id}", data=der,
                                   headers={"Content-Type": "application/ocsp-request"}) as resp:
        return resp.status, resp.content_type, await resp.read()


async def ask(client: ApiClient, ca_id: str, der: bytes) -> ocsp.OCSPResponse:
    status, content_type, body = await post(client, ca_id, der)
    assert status == 200 and content_type == "application/ocsp-response", (status, content_type, body[:200])
    return ocsp.load_der_ocsp_response(body)


def assert_signed_by_delegate_of(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    [responder] = response.certificates
    assert responder.issuer == issuer.subject
    responder.verify_directly_issued_by(issuer)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert response.responder_key_hash == responder.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    from cryptography.hazmat.primitives.asymmetric import ec
    key = responder.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm))
    return responder


async def openssl_ocsp(tmp_path: Path, pki: Pki, url: str, *target: str) -> tuple[int, str]:
    (tmp_path / "root.pem").write_text(pki.root_pem)
    (tmp_path / "issuing.pem").write_text(pki.issuing_pem)
    return await run("openssl", "ocsp", "-issuer", str(tmp_path / "issuing.pem"), *target, "-url", url,
                     "-CAfile", str(tmp_path / "root.pem"), "-verify_other", str(tmp_path / "issuing.pem"))


async def test_openssl_reports_good_then_revoked_within_5_seconds_and_unknown_for_a_serial_never_issued(
        worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-live.example.test")
    leaf = leaf_of(view)
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    [url] = [d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.OCSP]
    assert url == f"{tenant.admin.base}{OCSP}/{pki.issuing_id}"
    (tmp_path / "leaf.pem").write_text(str(view["certificate"]))
    code, out = await openssl_ocsp(tmp_path, pki, url, "-cert", str(tmp_path / "leaf.pem"))
    assert code == 0 and "Response verify OK" in out and f"{tmp_path / 'leaf.pem'}: good" in out, out

    assert (await revoke(tenant.admin, str(view["certificateId"]), "KEY_COMPROMISE")).status == 200
    revoked_at = time.monotonic()
    while True:
        code, out = await openssl_ocsp(tmp_path, pki, url, "-cert", str(tmp_path / "leaf.pem"))
        if ": revoked" in out:
            break
        assert time.monotonic() - revoked_at < 5, out
        await asyncio.sleep(0.1)
    assert code == 0 and "Response verify OK" in out and "Reason: keyCompromise" in out, out

    code, out = await openssl_ocsp(tmp_path, pki, url, "-serial", "0x1234567890abcdef")
    assert code == 0 and "Response verify OK" in out and "0x1234567890abcdef: unknown" in out, out


async def test_sha256_cert_ids_are_answered_with_the_same_hash(worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-sha256.example.test")
    (tmp_path / "leaf.pem").write_text(str(view["certificate"]))
    code, out = await openssl_ocsp(tmp_path, pki, f"{tenant.admin.base}{OCSP}/{pki.issuing_id}", "-sha256",
                                   "-cert", str(tmp_path / "leaf.pem"))
    assert code == 0 and "Response verify OK" in out and ": good" in out, out
    response = await ask(tenant.admin, pki.issuing_id,
                         request_for(leaf_of(view), issuing_of(pki), hashes.SHA256()))
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.serial_number == leaf_of(view).serial_number


async def test_post_answer_is_signed_by_a_delegated_responder_with_the_nonce_echoed(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-post.example.test")
    response = await ask(tenant.admin, pki.issuing_id, request_for(leaf_of(view), issuing_of(pki), nonce=b"n" * 16))
    responder = assert_signed_by_delegate_of(response, issuing_of(pki))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    now = datetime.now(UTC)
    assert response.this_update_utc <= now + timedelta(seconds=1)
    assert response.next_update_utc is not None and now < response.next_update_utc <= responder.not_valid_after_utc
    # Short-lived: the default responder validity is two days.
    assert responder.not_valid_after_utc - responder.not_valid_before_utc <= timedelta(days=2, minutes=2)


async def test_get_with_the_base64_request_in_the_path_url_encoded_or_not(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-get.example.test")
    der = request_for(leaf_of(view), issuing_of(pki))
    text = base64.b64encode(der).decode()
    for path in (quote(text, safe=""), text, base64.urlsafe_b64encode(der).decode().rstrip("=")):
        async with tenant.admin.session.get(f"{tenant.admin.base}{OCSP}/{pki.issuing_id}/{path}") as resp:
            assert resp.status == 200 and resp.content_type == "application/ocsp-response", path
            response = ocsp.load_der_ocsp_response(await resp.read())
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, path
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == leaf_of(view).serial_number


async def test_revoked_answer_carries_time_and_reason_and_unspecified_leaves_the_reason_out(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    superseded = await issue(tenant.admin, pki, "ocsp-superseded.example.test")
    plain = await issue(tenant.admin, pki, "ocsp-plain.example.test")
    r = await revoke(tenant.admin, str(superseded["certificateId"]), "SUPERSEDED")
    assert r.status == 200
    assert (await revoke(tenant.admin, str(plain["certificateId"]), "UNSPECIFIED")).status == 200
    response = await ask(tenant.admin, pki.issuing_id, request_for(leaf_of(superseded), issuing_of(pki)))
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.superseded
    revoked_at = datetime.fromisoformat(str(r.body["revokedAt"]).replace("Z", "+00:00"))
    assert response.revocation_time_utc == revoked_at.replace(microsecond=0)
    assert response.this_update_utc >= response.revocation_time_utc
    response = await ask(tenant.admin, pki.issuing_id, request_for(leaf_of(plain), issuing_of(pki)))
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED and response.revocation_reason is None


async def test_the_root_answers_for_the_intermediate_it_signed(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    root = x509.load_pem_x509_certificate(pki.root_pem.encode())
    response = await ask(tenant.admin, pki.root_id, request_for(issuing_of(pki), root))
    assert_signed_by_delegate_of(response, root)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD


async def test_good_revoked_and_unknown_answers_lint_clean(worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    live = await issue(tenant.admin, pki, "ocsp-lint-live.example.test")
    gone = await issue(tenant.admin, pki, "ocsp-lint-gone.example.test")
    assert (await revoke(tenant.admin, str(gone["certificateId"]), "CESSATION_OF_OPERATION")).status == 200
    requests = {"good": request_for(leaf_of(live), issuing_of(pki), nonce=b"x" * 32),
                "revoked": request_for(leaf_of(gone), issuing_of(pki), hashes.SHA256()),
                "unknown": request_by_serial(0x5EED, issuing_of(pki))}
    for name, der in requests.items():
        status, _, body = await post(tenant.admin, pki.issuing_id, der)
        assert status == 200
        assert ocsp.load_der_ocsp_response(body).certificate_status.name.lower() == name
        path = tmp_path / f"{name}.der"
        path.write_bytes(body)
        _, out = await run(LINT_OCSP, "lint", "-f", "JSON", "-s", "ALL", "--document-format", "DER", str(path))
        results = json.loads(out)["results"]
        assert results, out
        bad = [(r["validator"], f["code"]) for r in results for f in r["finding_descriptions"]
               if f["severity"] in ("ERROR", "FATAL")]
        assert bad == [], (name, bad)


async def test_bad_requests_get_ocsp_error_responses_never_a_500(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-bad.example.test")
    root = x509.load_pem_x509_certificate(pki.root_pem.encode())
    good = request_for(leaf_of(view), issuing_of(pki))
    cases = {
        "malformed": [(pki.issuing_id, b"not an OCSP request"), (pki.issuing_id, good[:-3]),
                      (pki.issuing_id, b"\x30" * 9000)],
        # The CertID names the issuing CA, asked of the root; a CA that does not exist; not an id at all.
        "unauthorized": [(pki.root_id, good), ("00000000-0000-4000-8000-000000000000", good),
                         ("not-a-ca", good), (pki.root_id, request_for(leaf_of(view), root))],
    }
    expected = {"malformed": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED}
    for name, calls in cases.items():
        for ca_id, der in calls:
            response = await ask(tenant.admin, ca_id, der)
            assert response.response_status == expected[name], (name, ca_id, der[:20])
    async with tenant.admin.session.get(f"{tenant.admin.base}{OCSP}/{pki.issuing_id}/%%%not-base64") as resp:
        assert resp.status == 200
        assert ocsp.load_der_ocsp_response(await resp.read()).response_status == expected["malformed"]


async def test_another_projects_ca_answers_only_for_its_own_certificates(
        worker: Stack, tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    other = await make_tenant("ocsp-other")
    other_pki = await make_pki(other.admin, other.project_id)
    view = await issue(tenant.admin, pki, "ocsp-tenant.example.test")
    response = await ask(tenant.admin, other_pki.issuing_id, request_for(leaf_of(view), issuing_of(pki)))
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_each_responder_certificate_is_an_audited_ca_signature(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    rows = await db.fetch("SELECT r.id, r.serial_number, r.encrypted_private_key, r.certificate_pem"
                          " FROM ocsp_responders r WHERE r.ca_id = $1::uuid", pki.issuing_id)
    assert len(rows) == 1  # issued with the CA, in the transaction that activated it
    assert b"PRIVATE KEY" not in rows[0]["encrypted_private_key"]
    events = await db.fetch("SELECT details FROM audit_events WHERE action = 'ocsp.responder.sign'"
                            " AND subject_id = $1", pki.issuing_id)
    assert [json.loads(e["details"])["serial"] if isinstance(e["details"], str) else e["details"]["serial"]
            for e in events] == [rows[0]["serial_number"]]
    # Its serial is reserved like any other of the CA's.
    assert await db.fetchval("SELECT count(*) FROM issued_serials WHERE issuer_id = $1::uuid AND serial_number = $2",
                             pki.issuing_id, rows[0]["serial_number"]) == 1


async def test_a_ca_without_a_current_responder_gets_one_from_a_worker_on_the_first_request(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-expired-responder.example.test")
    # As if the workers had been down past the responder's end (a CA made before OCSP has none at all).
    await db.execute("UPDATE ocsp_responders SET not_before = now() - interval '3 days',"
                     " not_after = now() - interval '1 hour' WHERE ca_id = $1::uuid", pki.issuing_id)
    response = await ask(tenant.admin, pki.issuing_id, request_for(leaf_of(view), issuing_of(pki)))
    responder = assert_signed_by_delegate_of(response, issuing_of(pki))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert responder.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)


async def test_beat_replaces_a_responder_within_its_refresh_margin_and_leaves_a_fresh_one(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    count = "SELECT count(*) FROM ocsp_responders WHERE ca_id = $1::uuid"
    newest = "SELECT max(not_after) FROM ocsp_responders WHERE ca_id = $1::uuid"
    broker = Broker(worker.broker_url)
    try:
        await broker.send(tasks.REFRESH_OCSP_RESPONDERS, [])  # fresh (two days left): nothing to do
        await asyncio.sleep(1.5)
        assert await db.fetchval(count, pki.issuing_id) == 1
        await db.execute("UPDATE ocsp_responders SET not_after = now() + interval '2 hours'"
                         " WHERE ca_id = $1::uuid", pki.issuing_id)
        await broker.send(tasks.REFRESH_OCSP_RESPONDERS, [])
        deadline = time.monotonic() + 10
        while await db.fetchval(count, pki.issuing_id) < 2:
            assert time.monotonic() < deadline, "the refresh issued no new responder"
            await asyncio.sleep(0.2)
    finally:
        await broker.close()
    assert await db.fetchval(newest, pki.issuing_id) > datetime.now(UTC) + timedelta(days=1)


async def test_answers_are_counted_per_responder_in_the_audit_log(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issue(tenant.admin, pki, "ocsp-counted.example.test")
    # An API of its own, stopped at the end: it writes its counts when it shuts down (else every minute).
    url = await asyncio.to_thread(worker.start_api, name="api-ocsp-counts")
    try:
        own = ApiClient(tenant.admin.session, url, None)
        for _ in range(3):
            response = await ask(own, pki.issuing_id, request_for(leaf_of(view), issuing_of(pki)))
            assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        await ask(own, pki.issuing_id, b"not OCSP")  # unsigned: not counted
    finally:
        await asyncio.to_thread(worker.stop, "api-ocsp-counts")
    rows = await db.fetch("SELECT actor, details FROM audit_events WHERE action = 'ocsp.responses.sign'"
                          " AND subject_id = $1", pki.issuing_id)
    details = [json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows]
    responder = await db.fetchval("SELECT id::text FROM ocsp_responders WHERE ca_id = $1::uuid", pki.issuing_id)
    assert [(r["actor"], d["responses"], d["responderId"]) for r, d in zip(rows, details, strict=True)] == [
        ("ocsp-responder", 3, responder)]
