"""The routes of ``/api/v1/cert-manager/certificates`` and its certificate requests (issuance)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from api.auth import current_identity
from api.body import parse, path_uuid, query_int, validate
from api.certificates.schemas import (
    DB_STATUSES,
    MAX_WAIT_SECONDS,
    WIRE_STATUSES,
    CertificateBody,
    CertificateConfigAnswer,
    CertificateConfigBody,
    CertificateRequestList,
    CertificateRequestView,
    CertificateView,
    IssueAnswer,
    IssueBody,
    RenewAnswer,
    RenewBody,
    RequestSearch,
    RevokeAnswer,
    RevokeBody,
    check_idempotency_key,
    decode_cursor,
    encode_cursor,
    item_of,
    request_fingerprint,
)
from api.context import BROKER, DB, ISSUING_CONTEXTS, KEYRING, NOTIFICATIONS, SETTINGS
from api.render import json_response
from api.routing import Routes, absolute_url
from shared import access, registration
from shared import tasks as task_names
from shared.db import Executor, audit
from shared.db import applications as applications_db
from shared.db import requests as db
from shared.db import revocation as revocation_db
from shared.db.identities import Identity
from shared.db.requests import CertificateRow, RequestRow, RequestWithCertificate
from shared.errors import BadRequest, Conflict, FieldError, KmsError, NotFound, ValidationFailure
from shared.pki.keys import load_private_key_der, private_key_to_pem
from shared.secrets.envelope import EnvelopeError

routes = Routes("certificates")
log = logging.getLogger("kms.api")
BASE = "/api/v1/cert-manager/certificates"
REQUESTS = BASE + "/certificate-requests"
FINAL = ("issued", "failed")
RETRY_AFTER = "1"
WAIT_QUERY = {"wait": f"seconds to wait for the outcome (0-{MAX_WAIT_SECONDS})"}


def _wait_seconds(request: web.Request) -> int:
    return query_int(request, "wait", default=0, low=0, high=MAX_WAIT_SECONDS)


async def private_key_pem(request: web.Request, conn: Executor, identity: Identity, cert: CertificateRow | None
                          ) -> str | None:
    """The server-generated key of ``cert`` in PEM, for callers whose role may read keys; else None.
    Every key handed out is audited."""
    keys = await private_keys_pem(request, conn, identity, [cert] if cert is not None else [])
    return keys.get(cert.id) if cert is not None else None


async def private_keys_pem(request: web.Request, conn: Executor, identity: Identity, certs: list[CertificateRow]
                           ) -> dict[UUID, str]:
    """``private_key_pem`` for a page of certificates, with one audit statement for the page."""
    if not access.can_read_private_keys(identity):
        return {}
    keys: dict[UUID, str] = {}
    for cert in certs:
        if cert.encrypted_private_key is None:
            continue
        try:
            der = await request.app[KEYRING].open(conn, cert.project_id, cert.encrypted_private_key,
                                                  table="certificates", row_id=cert.id)
        except EnvelopeError:
            # The ciphertext is bound to its own row (AAD): one copied here, or damaged, never opens.
            log.error("a stored private key does not decrypt", extra={"certificate_id": str(cert.id)})
            raise KmsError(f"the stored private key of certificate {cert.id} does not decrypt; "
                           "it is damaged or not this certificate's: quote the request id to the operator") from None
        keys[cert.id] = private_key_to_pem(load_private_key_der(der)).decode()
    if keys:
        await audit.record_key_reads(conn, identity.project_id, f"identity:{identity.id}", list(keys),
                                     request.path)
    return keys


async def _await_outcome(request: web.Request, request_id: UUID, project_id: UUID, wait: float
                         ) -> RequestWithCertificate:
    """The request, once final or when ``wait`` seconds have passed (long-poll on LISTEN/NOTIFY)."""
    pool = request.app[DB]

    async def read() -> RequestWithCertificate | None:
        return await db.request_with_certificate(pool, request_id, project_id)

    found = await request.app[NOTIFICATIONS].wait_for(
        f"req:{request_id}", read, lambda f: f is None or f.request.status in FINAL, wait)
    if found is None:
        raise NotFound("no such certificate request")
    return found


View = type[CertificateRequestView] | type[IssueAnswer] | type[RenewAnswer]


async def _render(request: web.Request, identity: Identity, found: RequestWithCertificate, view: View = (
                  CertificateRequestView), *, status: int | None = None) -> web.Response:
    # The pool serves the rare data-key read itself: no connection is held for the common keyless answer.
    key = await private_key_pem(request, request.app[DB], identity, found.certificate)
    body = view.of(found.request, found.certificate, key)
    final = found.request.status in FINAL
    headers = {"Location": absolute_url(request, request.app[SETTINGS].public_url, f"{REQUESTS}/{found.request.id}")}
    if not final:
        headers["Retry-After"] = RETRY_AFTER
    return json_response(body.to_json(), status=status or 200, headers=headers)


async def _enqueue(request: web.Request, row: RequestRow) -> None:
    await request.app[BROKER].enqueue(str(row.id), row.issuer_kind)


@routes.route("POST", BASE, summary="Request a certificate (202 with a request to poll; 200 once issued within ?wait)",
              body=IssueBody, response=IssueAnswer, status=202, query=WAIT_QUERY)
async def issue(request: web.Request) -> web.Response:
    wait = _wait_seconds(request)
    idempotency_key = check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = await parse(request, IssueBody)
    identity = current_identity(request)
    pool = request.app[DB]
    ctx = await request.app[ISSUING_CONTEXTS].get(pool, body.profile_id)
    if ctx is None or ctx.profile.project_id != identity.project_id:
        raise NotFound("no such certificate profile", [FieldError("profileId", "no such profile in this project")])
    access.authorize(identity, ctx.profile.project_id, "issuer")
    if body.application_id is not None and not await applications_db.holds_profile(
            pool, body.application_id, ctx.profile.project_id, ctx.profile.id):
        raise NotFound("no such application for this profile",
                       [FieldError("applicationId", "no application of this project groups this profile")])
    fingerprint = request_fingerprint(body) if idempotency_key else None
    registered = await registration.register_request(
        pool, ctx, csr_pem=body.csr, attributes=body.issue_attributes(), remove_roots=body.removes_roots(),
        requested_by=identity.id, idempotency_key=idempotency_key, request_hash=fingerprint)
    if registered.created:
        await _enqueue(request, registered.request)
    return await _answer(request, identity, registered.request, wait, IssueAnswer)


async def _answer(request: web.Request, identity: Identity, row: RequestRow, wait: float, view: View
                  ) -> web.Response:
    # Without ?wait the row just written is the answer. With it, the state is read again after
    # subscribing (never from before): a worker may finish between the insert and the subscription.
    found = RequestWithCertificate(row, None) if wait <= 0 and row.status not in FINAL else \
        await _await_outcome(request, row.id, row.project_id, wait)
    return await _render(request, identity, found, view, status=200 if found.request.status == "issued" else 202)


@routes.route("GET", REQUESTS + "/{requestId}", summary="A certificate request (long-poll with ?wait=N)",
              response=CertificateRequestView, query=WAIT_QUERY)
async def get_request(request: web.Request) -> web.Response:
    wait = _wait_seconds(request)
    identity = current_identity(request)
    found = await _await_outcome(request, path_uuid(request, "requestId"), identity.project_id, wait)
    access.authorize(identity, found.request.project_id, "viewer")
    return await _render(request, identity, found)


LIST_QUERY = {"projectId": "project (or projectSlug)", "projectSlug": "project slug (or projectId)",
              "offset": "0 or more (0)", "limit": "1-100 (20)", "search": "part of the common name, or the id",
              "status": "|".join(WIRE_STATUSES), "fromDate": "RFC 3339", "toDate": "RFC 3339",
              "profileIds": "comma-separated profile ids", "sortBy": "createdAt|updatedAt",
              "sortOrder": "asc|desc (desc)", "cursor": "extension: nextCursor of the previous page"}


async def _search(request: web.Request, search: RequestSearch) -> web.Response:
    identity = current_identity(request)
    pool = request.app[DB]
    project_id = search.project_id or identity.project_id
    if search.project_id is None and search.project_slug is None:
        raise ValidationFailure("projectId or projectSlug is required", [FieldError("projectId", "required")])
    if search.project_slug is not None and (
            project_id != identity.project_id or not await db.project_has_slug(pool, project_id, search.project_slug)):
        raise NotFound("no such project", [FieldError("projectSlug", "no such project")])
    access.authorize(identity, project_id, "viewer")
    if search.cursor is not None and (search.sort_by, search.sort_order) != ("createdAt", "desc"):
        raise BadRequest("cursor pages only the default order (createdAt desc)", [FieldError("cursor", "invalid")])
    rows, total = await db.search_requests(
        pool, db.RequestFilter(
            project_id=project_id, statuses=DB_STATUSES[search.status] if search.status else None,
            search=search.search or None, from_date=search.from_date, to_date=search.to_date,
            profile_ids=search.profile_ids, sort_by="updated_at" if search.sort_by == "updatedAt" else "created_at",
            descending=search.sort_order == "desc"),
        offset=search.offset, limit=search.limit, after=decode_cursor(search.cursor) if search.cursor else None)
    now = datetime.now(UTC)
    deep = (search.sort_by, search.sort_order) == ("createdAt", "desc") and len(rows) == search.limit
    page = CertificateRequestList(certificate_requests=[item_of(r, now) for r in rows], total_count=total,
                                  next_cursor=encode_cursor(rows[-1].request) if deep else None)
    return json_response(page.to_json())


@routes.route("GET", REQUESTS, summary="List certificate requests (newest first by default)",
              response=CertificateRequestList, query=LIST_QUERY)
async def list_requests(request: web.Request) -> web.Response:
    query: dict[str, Any] = dict(request.query)
    if "profileIds" in query:
        query["profileIds"] = [p for v in request.query.getall("profileIds") for p in v.split(",") if p]
    return await _search(request, validate(RequestSearch, query))


@routes.route("POST", REQUESTS + "/search", summary="Search certificate requests (the list's filters in the body)",
              body=RequestSearch, response=CertificateRequestList)
async def search_requests(request: web.Request) -> web.Response:
    return await _search(request, await parse(request, RequestSearch))


async def _certificate(request: web.Request, minimum_role: str = "viewer") -> CertificateRow:
    """The path's certificate, if it is the caller's project's (else 404) and the role suffices (else 403)."""
    identity = current_identity(request)
    cert = await db.get_certificate(request.app[DB], path_uuid(request, "certificateId"), identity.project_id)
    if cert is None:
        raise NotFound("no such certificate")
    access.authorize(identity, cert.project_id, minimum_role)
    return cert


@routes.route("GET", BASE + "/{certificateId}", summary="A certificate's metadata", response=CertificateView)
async def get_certificate(request: web.Request) -> web.Response:
    return json_response((await _metadata(request, await _certificate(request))).to_json())


async def _metadata(request: web.Request, cert: CertificateRow) -> CertificateView:
    ctx = await request.app[ISSUING_CONTEXTS].get(request.app[DB], cert.profile_id)
    # renewBeforeDays is the certificate's own (stamped at issuance, changed by PATCH /config): null
    # when it does not renew itself.
    return CertificateView.of(
        cert, profile_name=ctx.profile.slug if ctx is not None else None,
        ca_name=ctx.ca.name if ctx is not None and ctx.ca is not None else None,
        ca_type=ctx.ca.type if ctx is not None and ctx.ca is not None else None)


def _body(cert: CertificateRow, private_key: str | None = None) -> CertificateBody:
    return CertificateBody(certificate=cert.certificate_pem, certificate_chain=cert.chain_pem,
                           issuing_ca_certificate=cert.issuing_ca_pem, serial_number=cert.serial_number,
                           private_key=private_key)


@routes.route("DELETE", BASE + "/{certificateId}", summary="Delete a certificate (its request still reads)",
              response=CertificateView)
async def delete_certificate(request: web.Request) -> web.Response:
    cert = await _certificate(request, "admin")
    identity = current_identity(request)
    view = await _metadata(request, cert)
    if not await db.delete_certificate(request.app[DB], cert.id, cert.project_id, f"identity:{identity.id}"):
        raise NotFound("no such certificate")
    return json_response(view.to_json())


@routes.route("GET", BASE + "/{certificateId}/certificate", summary="The certificate and its chain (PEM)",
              response=CertificateBody)
async def get_certificate_pem(request: web.Request) -> web.Response:
    return json_response(_body(await _certificate(request)).to_json())


@routes.route("GET", BASE + "/{certificateId}/bundle",
              summary="Certificate, chain and (for server-generated keys, to issuer and admin) the private key",
              response=CertificateBody)
async def get_bundle(request: web.Request) -> web.Response:
    cert = await _certificate(request)
    key = await private_key_pem(request, request.app[DB], current_identity(request), cert)
    return json_response(_body(cert, key).to_json())


@routes.route("GET", BASE + "/{certificateId}/private-key",
              summary="The private key the server generated, as a PEM text/plain body")
async def get_private_key(request: web.Request) -> web.Response:
    cert = await _certificate(request, "issuer")
    identity = current_identity(request)
    if cert.encrypted_private_key is None:
        raise NotFound("this certificate was issued from a CSR; the service never held its private key")
    key = await private_key_pem(request, request.app[DB], identity, cert)
    assert key is not None
    return web.Response(text=key, content_type="text/plain")


@routes.route("POST", BASE + "/{certificateId}/renew",
              summary="Renew a server-key certificate: same profile and names, a new key", status=202,
              body=RenewBody, response=RenewAnswer, query=WAIT_QUERY)
async def renew(request: web.Request) -> web.Response:
    wait = _wait_seconds(request)
    cert = await _certificate(request, "issuer")
    identity = current_identity(request)
    # The body is optional (the KMS agent sends {"removeRootsFromChain": true}; others send none).
    body = await parse(request, RenewBody) if request.can_read_body else RenewBody()
    pool = request.app[DB]
    original = await db.get_request(pool, cert.request_id, cert.project_id)
    assert original is not None
    registration.check_renewable(original, cert)
    ctx = await request.app[ISSUING_CONTEXTS].get(pool, cert.profile_id)
    assert ctx is not None
    async with pool.acquire() as conn:
        registered = await registration.register_renewal(conn, ctx, original=original, certificate=cert,
                                                         requested_by=identity.id,
                                                         remove_roots=body.remove_roots_from_chain)
    if registered.created:  # else a renewal already under way answers: its own message is on its way
        await _enqueue(request, registered.request)
    return await _answer(request, identity, registered.request, wait, RenewAnswer)


@routes.route("PATCH", BASE + "/{certificateId}/config",
              summary="A certificate's server-driven renewal: renewBeforeDays (1-30), enableAutoRenewal",
              body=CertificateConfigBody, response=CertificateConfigAnswer)
async def update_config(request: web.Request) -> web.Response:
    cert = await _certificate(request, "issuer")
    identity = current_identity(request)
    body = await parse(request, CertificateConfigBody)
    if body.renew_before_days is None and body.enable_auto_renewal is None:
        raise ValidationFailure("give renewBeforeDays or enableAutoRenewal",
                                [FieldError("renewBeforeDays", "required unless enableAutoRenewal is given")])
    if body.enable_auto_renewal is False:
        auto, days = False, None
        message = "Auto-renewal disabled"
    else:
        original = await db.get_request(request.app[DB], cert.request_id, cert.project_id)
        assert original is not None
        registration.check_renewable(original, cert)
        if cert.renewed_by_id is not None:
            raise BadRequest("this certificate was already renewed",
                             [FieldError("certificateId", f"renewed by {cert.renewed_by_id}")])
        days = body.renew_before_days or cert.renew_before_days
        if days is None:
            raise ValidationFailure("renewBeforeDays is required to enable auto-renewal",
                                    [FieldError("renewBeforeDays", "required")])
        if cert.not_after - timedelta(days=days) - cert.not_before < timedelta(days=1):
            raise BadRequest("renewBeforeDays must leave the certificate at least a day before it falls due",
                             [FieldError("renewBeforeDays", "too long for this certificate's lifetime")])
        auto = True
        message = "Auto-renewal configured"
    if not await db.set_renewal_config(request.app[DB], cert.id, cert.project_id, auto_renew=auto,
                                       renew_before_days=days, actor=f"identity:{identity.id}"):
        raise NotFound("no such certificate")
    return json_response(CertificateConfigAnswer(message=message, renew_before_days=days).to_json())


@routes.route("POST", BASE + "/{certificateId}/revoke",
              summary="Revoke a certificate: on its CA's CRL within seconds (a second revoke is 409)",
              body=RevokeBody, response=RevokeAnswer)
async def revoke(request: web.Request) -> web.Response:
    cert = await _certificate(request, "issuer")
    identity = current_identity(request)
    body = await parse(request, RevokeBody)
    async with request.app[DB].acquire() as conn, conn.transaction():
        done = await revocation_db.revoke(conn, cert.id, cert.project_id, body.revocation_reason,
                                          f"identity:{identity.id}")
    if done is None:
        raise Conflict("the certificate is already revoked", [FieldError("certificateId", "already revoked")])
    serial, revoked_at = done
    if cert.ca_id is not None:
        # The revocation is committed; the CRL task re-reads every revocation of the CA (so a burst shares
        # one CRL), and beat re-signs it if this message is lost.
        await request.app[BROKER].send_best_effort(task_names.SIGN_CRL, [str(cert.ca_id)])
    return json_response(RevokeAnswer(message="Successfully revoked certificate", serial_number=serial,
                                          revoked_at=revoked_at).to_json())
