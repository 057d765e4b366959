"""The routes of ``/api/v1/cert-manager/certificates`` and its certificate requests (issuance)."""

from __future__ import annotations

import logging
from uuid import UUID

from aiohttp import web

from api.auth import current_identity
from api.body import parse, path_uuid, query_int, query_uuid
from api.certificates.schemas import (
    MAX_WAIT_SECONDS,
    CertificateBody,
    CertificateRequestList,
    CertificateRequestView,
    CertificateView,
    IssueBody,
    PrivateKeyBody,
    check_idempotency_key,
    decode_cursor,
    encode_cursor,
    request_fingerprint,
)
from api.context import BROKER, DB, ISSUING_CONTEXTS, KEYRING, NOTIFICATIONS, SETTINGS
from api.routing import Routes, absolute_url
from shared import access, registration
from shared.db import Executor, audit
from shared.db import requests as db
from shared.db.identities import Identity
from shared.db.requests import CertificateRow, RequestRow, RequestWithCertificate
from shared.errors import BadRequest, FieldError, KmsError, NotFound
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


async def _render(request: web.Request, identity: Identity, found: RequestWithCertificate, *,
                  status: int | None = None) -> web.Response:
    # The pool serves the rare data-key read itself: no connection is held for the common keyless answer.
    key = await private_key_pem(request, request.app[DB], identity, found.certificate)
    view = CertificateRequestView.of(found.request, found.certificate, key)
    final = found.request.status in FINAL
    headers = {"Location": absolute_url(request, request.app[SETTINGS].public_url, f"{REQUESTS}/{found.request.id}")}
    if not final:
        headers["Retry-After"] = RETRY_AFTER
    return web.json_response(view.to_json(), status=status or 200, headers=headers)


def _enqueue(request: web.Request, request_id: UUID) -> None:
    # Coalesced with requests arriving at the same moment into one chunk message (see Broker.ring).
    request.app[BROKER].ring(str(request_id))


@routes.route("POST", BASE, summary="Request a certificate (answers at once with a request id)", body=IssueBody,
              response=CertificateRequestView, status=202, query=WAIT_QUERY)
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
    fingerprint = request_fingerprint(body) if idempotency_key else None
    registered = await registration.register_request(
        pool, ctx, csr_pem=body.csr, attributes=body.attributes, remove_roots=body.remove_roots_from_chain,
        requested_by=identity.id, idempotency_key=idempotency_key, request_hash=fingerprint)
    if registered.created:
        _enqueue(request, registered.request.id)
    return await _answer(request, identity, registered.request, wait)


async def _answer(request: web.Request, identity: Identity, row: RequestRow, wait: float) -> web.Response:
    # Without ?wait the row just written is the answer. With it, the state is read again after
    # subscribing (never from before): a worker may finish between the insert and the subscription.
    found = RequestWithCertificate(row, None) if wait <= 0 and row.status not in FINAL else \
        await _await_outcome(request, row.id, row.project_id, wait)
    return await _render(request, identity, found, status=201 if found.request.status == "issued" else 202)


@routes.route("GET", REQUESTS + "/{requestId}", summary="A certificate request (long-poll with ?wait=N)",
              response=CertificateRequestView, query=WAIT_QUERY)
async def get_request(request: web.Request) -> web.Response:
    wait = _wait_seconds(request)
    identity = current_identity(request)
    found = await _await_outcome(request, path_uuid(request, "requestId"), identity.project_id, wait)
    access.authorize(identity, found.request.project_id, "viewer")
    return await _render(request, identity, found)


@routes.route("GET", REQUESTS, summary="List certificate requests, newest first",
              response=CertificateRequestList,
              query={"projectId": "project", "status": "pending|processing|issued|failed",
                     "limit": "1-500 (50)", "cursor": "nextCursor of the previous page"})
async def list_requests(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    status = request.query.get("status")
    if status is not None and status not in ("pending", "processing", "issued", "failed"):
        raise BadRequest("status must be pending, processing, issued or failed", [FieldError("status", "invalid")])
    limit = query_int(request, "limit", default=50, low=1, high=500)
    cursor = request.query.get("cursor")
    rows = await db.list_requests(request.app[DB], project_id, status=status, limit=limit,
                                  after=decode_cursor(cursor) if cursor else None)
    page = CertificateRequestList(items=[CertificateRequestView.of(r, None) for r in rows],
                                  next_cursor=encode_cursor(rows[-1]) if len(rows) == limit else None)
    return web.json_response(page.to_json())


async def _certificate(request: web.Request) -> CertificateRow:
    identity = current_identity(request)
    cert = await db.get_certificate(request.app[DB], path_uuid(request, "certificateId"), identity.project_id)
    if cert is None:
        raise NotFound("no such certificate")
    access.authorize(identity, cert.project_id, "viewer")
    return cert


@routes.route("GET", BASE + "/{certificateId}", summary="A certificate's metadata", response=CertificateView)
async def get_certificate(request: web.Request) -> web.Response:
    return web.json_response(CertificateView.of(await _certificate(request)).to_json())


def _body(cert: CertificateRow, private_key: str | None = None) -> CertificateBody:
    return CertificateBody(certificate=cert.certificate_pem, certificate_chain=cert.chain_pem,
                           issuing_ca_certificate=cert.issuing_ca_pem, serial_number=cert.serial_number,
                           private_key=private_key)


@routes.route("GET", BASE + "/{certificateId}/certificate", summary="The certificate and its chain (PEM)",
              response=CertificateBody)
async def get_certificate_pem(request: web.Request) -> web.Response:
    return web.json_response(_body(await _certificate(request)).to_json())


@routes.route("GET", BASE + "/{certificateId}/bundle",
              summary="Certificate, chain and (for server-generated keys, to issuer and admin) the private key",
              response=CertificateBody)
async def get_bundle(request: web.Request) -> web.Response:
    cert = await _certificate(request)
    key = await private_key_pem(request, request.app[DB], current_identity(request), cert)
    return web.json_response(_body(cert, key).to_json())


@routes.route("GET", BASE + "/{certificateId}/private-key", summary="The private key the server generated",
              response=PrivateKeyBody)
async def get_private_key(request: web.Request) -> web.Response:
    cert = await _certificate(request)
    identity = current_identity(request)
    access.authorize(identity, cert.project_id, "issuer")
    if cert.encrypted_private_key is None:
        raise NotFound("this certificate was issued from a CSR; the service never held its private key")
    key = await private_key_pem(request, request.app[DB], identity, cert)
    assert key is not None
    return web.json_response(PrivateKeyBody(private_key=key).to_json())


@routes.route("POST", BASE + "/{certificateId}/renew",
              summary="Renew a server-key certificate: same profile and names, a new key", status=202,
              response=CertificateRequestView, query=WAIT_QUERY)
async def renew(request: web.Request) -> web.Response:
    wait = _wait_seconds(request)
    cert = await _certificate(request)
    identity = current_identity(request)
    access.authorize(identity, cert.project_id, "issuer")
    pool = request.app[DB]
    original = await db.get_request(pool, cert.request_id, cert.project_id)
    assert original is not None
    registration.check_renewable(original, cert)
    ctx = await request.app[ISSUING_CONTEXTS].get(pool, cert.profile_id)
    assert ctx is not None
    row = await registration.register_renewal(pool, ctx, original=original, certificate=cert,
                                              requested_by=identity.id)
    _enqueue(request, row.id)
    return await _answer(request, identity, row, wait)
