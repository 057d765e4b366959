"""A certificate's page (details, downloads, revoke, renew) and the certificates list with its filters.

Reads go through ``shared.db``; a server-made key is opened by the key ring and every key handed out is
audited (``certificate.private_key.read``), as on the API; a revocation is ``shared.db.revocation.revoke``
followed by the CRL task the API's revoke handler sends; a renewal is the registration authority's.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Final, get_args
from uuid import UUID

from aiohttp import web
from cryptography import x509

from api.body import query_int
from api.certificates.schemas import CertificateView, RevocationReason
from api.context import BROKER, DB, ISSUING_CONTEXTS, KEYRING
from api.web.base import Visit, choice, page, path_uuid, redirect
from shared import access, registration, users
from shared import tasks as task_names
from shared.db import audit
from shared.db import certificate_listing as listing
from shared.db import policies as policies_db
from shared.db import requests as requests_db
from shared.db import revocation as revocation_db
from shared.db.requests import CertificateRow
from shared.errors import BadRequest, Conflict, FieldError, Forbidden, KmsError, NotFound
from shared.pki.keys import load_private_key_der, private_key_to_pem
from shared.secrets.envelope import EnvelopeError

log = logging.getLogger("kms.web")
REASONS: Final = list(get_args(RevocationReason))
DOWNLOADS: Final = ("certificate", "chain", "bundle", "key")
PAGE_SIZE: Final = 25
MAX_EXPIRING_DAYS: Final = 3650


async def _certificate(visit: Visit) -> CertificateRow:
    cert = await requests_db.get_certificate(visit.request.app[DB], path_uuid(visit, "certificateId"),
                                             visit.project_id)
    if cert is None:
        raise NotFound("no such certificate in this project")
    return cert


def may_read_key(visit: Visit, cert: CertificateRow) -> bool:
    return cert.encrypted_private_key is not None and access.can_read_private_keys(visit.me)


async def _private_key(visit: Visit, cert: CertificateRow) -> str:
    """The server-made key in PEM, for a role that may read keys; audited as on the API."""
    if not may_read_key(visit, cert):
        raise Forbidden("the private key is only shown to issuers and admins, and only when the server made it")
    assert cert.encrypted_private_key is not None
    pool = visit.request.app[DB]
    try:
        der = await visit.request.app[KEYRING].open(pool, cert.project_id, cert.encrypted_private_key,
                                                    table="certificates", row_id=cert.id)
    except EnvelopeError:
        log.error("a stored private key does not decrypt", extra={"certificate_id": str(cert.id)})
        raise KmsError(f"the stored private key of certificate {cert.id} does not decrypt; quote the request id "
                       "to the operator") from None
    await audit.record_key_reads(pool, cert.project_id, users.actor(visit.user), [cert.id], visit.request.path)
    return private_key_to_pem(load_private_key_der(der)).decode()


def _chain(cert: CertificateRow) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(cert.chain_pem.encode())] \
        if cert.chain_pem.strip() else []


@page("GET", "/projects/{projectId}/certificates/{certificateId}", summary="A certificate's page")
async def certificate_page(visit: Visit) -> web.StreamResponse:
    cert = await _certificate(visit)
    ctx = await visit.request.app[ISSUING_CONTEXTS].get(visit.request.app[DB], cert.profile_id)
    meta = CertificateView.of(cert, profile_name=ctx.profile.slug if ctx else None,
                              ca_name=ctx.ca.name if ctx and ctx.ca else None).certificate
    now = datetime.now(UTC)
    lifetime = (cert.not_after - cert.not_before).total_seconds()
    elapsed = min(max((now - cert.not_before).total_seconds(), 0.0), lifetime)
    return visit.render("certificate.html", cert=cert, meta=meta, chain=_chain(cert), reasons=REASONS,
                        lifetime=lifetime, elapsed=elapsed, days_left=max((cert.not_after - now).days, 0),
                        key_download=may_read_key(visit, cert),
                        renewable=cert.encrypted_private_key is not None and cert.revoked_at is None
                        and visit.allows("issuer"))


def _attachment(text: str, filename: str, content_type: str) -> web.Response:
    return web.Response(text=text, content_type=content_type, charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@page("GET", "/projects/{projectId}/certificates/{certificateId}/download/{kind}",
      summary="Download a certificate (PEM), its chain, its bundle, or the server-made key")
async def download(visit: Visit) -> web.StreamResponse:
    kind = visit.request.match_info["kind"]
    if kind not in DOWNLOADS:
        raise NotFound("no such download")
    cert = await _certificate(visit)
    stem = f"certificate-{cert.serial_number}"
    if kind == "certificate":
        return _attachment(cert.certificate_pem, f"{stem}.pem", "application/x-pem-file")
    if kind == "chain":
        return _attachment(cert.chain_pem, f"{stem}-chain.pem", "application/x-pem-file")
    if kind == "key":
        return _attachment(await _private_key(visit, cert), f"{stem}-key.pem", "application/x-pem-file")
    # The bundle: the certificate, then its chain, then (when the role may read it) the server-made key.
    parts = [cert.certificate_pem.strip(), cert.chain_pem.strip()]
    if may_read_key(visit, cert):
        parts.append((await _private_key(visit, cert)).strip())
    return _attachment("\n".join(p for p in parts if p) + "\n", f"{stem}-bundle.pem", "application/x-pem-file")


@page("POST", "/projects/{projectId}/certificates/{certificateId}/revoke", summary="Revoke a certificate")
async def revoke(visit: Visit) -> web.StreamResponse:
    if not visit.allows("issuer"):
        raise Forbidden(f"revoking needs the issuer role; you are {visit.me.role} in this project")
    cert = await _certificate(visit)
    reason = choice(visit.form, "revocationReason", tuple(REASONS))
    async with visit.request.app[DB].acquire() as conn, conn.transaction():
        done = await revocation_db.revoke(conn, cert.id, cert.project_id, reason, users.actor(visit.user))
    if done is None:
        raise Conflict("the certificate is already revoked", [FieldError("certificateId", "already revoked")])
    if cert.ca_id is not None:
        # As the API's revoke handler: the revocation is committed; the CRL task re-reads every revocation
        # of the CA, and beat re-signs the CRL if this message is lost.
        await visit.request.app[BROKER].send_best_effort(task_names.SIGN_CRL, [str(cert.ca_id)])
    return redirect(visit.url(f"/certificates/{cert.id}"))


@page("POST", "/projects/{projectId}/certificates/{certificateId}/renew",
      summary="Renew a server-key certificate: same profile and names, a new key")
async def renew(visit: Visit) -> web.StreamResponse:
    if not visit.allows("issuer"):
        raise Forbidden(f"renewing needs the issuer role; you are {visit.me.role} in this project")
    cert = await _certificate(visit)
    pool = visit.request.app[DB]
    original = await requests_db.get_request(pool, cert.request_id, cert.project_id)
    if original is None:
        raise NotFound("the certificate's request is gone")
    registration.check_renewable(original, cert)
    ctx = await visit.request.app[ISSUING_CONTEXTS].get(pool, cert.profile_id)
    if ctx is None:
        raise NotFound("the certificate's profile is gone")
    async with pool.acquire() as conn:
        registered = await registration.register_renewal(conn, ctx, original=original, certificate=cert,
                                                         requested_by=visit.user.id, remove_roots=None)
    if registered.created:
        await visit.request.app[BROKER].enqueue(str(registered.request.id), registered.request.issuer_kind)
    return redirect(visit.url(f"/requests/{registered.request.id}"))


def _encode(cursor: listing.Cursor) -> str:
    return base64.urlsafe_b64encode(f"{cursor.key.isoformat()}|{cursor.id}".encode()).decode().rstrip("=")


def _decode(text: str) -> listing.Cursor:
    try:
        key, _, ident = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().partition("|")
        return listing.Cursor(datetime.fromisoformat(key), UUID(ident))
    except ValueError:
        raise BadRequest("this page link is damaged; start from the first page", [FieldError("after", "invalid")]
                         ) from None


@page("GET", "/projects/{projectId}/certificates",
      summary="A project's certificates, filtered by status, profile or expiry, a page at a time")
async def certificates(visit: Visit) -> web.StreamResponse:
    query = visit.request.query
    status = query.get("status") or None
    if status is not None and status not in listing.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(listing.STATUSES)}", [FieldError("status", "invalid")])
    profile_id: UUID | None = None
    if query.get("profile"):
        try:
            profile_id = UUID(query["profile"])
        except ValueError:
            raise BadRequest("no such profile", [FieldError("profile", "invalid")]) from None
    # An empty field of the filter form is no filter.
    expiring = query_int(visit.request, "expiringWithinDays", default=0, low=1, high=MAX_EXPIRING_DAYS) \
        if query.get("expiringWithinDays") else None
    limit = query_int(visit.request, "limit", default=PAGE_SIZE, low=1, high=100) if query.get("limit") else PAGE_SIZE
    after = _decode(query["after"]) if query.get("after") else None
    pool = visit.request.app[DB]
    rows, next_cursor = await listing.list_certificates(
        pool, listing.CertificateFilter(visit.project_id, status, profile_id, expiring), limit=limit,
        after=after)
    profiles, _ = await policies_db.list_profiles(pool, visit.project_id, limit=100)
    slugs = {p.id: p.slug for p in profiles}
    now = datetime.now(UTC)
    filters = {k: v for k, v in {"status": status or "", "profile": str(profile_id or ""),
                                 "expiringWithinDays": str(expiring or ""),
                                 "limit": str(limit) if limit != PAGE_SIZE else ""}.items() if v}
    next_query = {**filters, "after": _encode(next_cursor)} if next_cursor else None
    return visit.render("certificates.html", rows=rows, slugs=slugs, profiles=profiles, now=now, filters=filters,
                        statuses=listing.STATUSES, next_query=next_query, first_page=after is not None)
