"""OCSP responder routes: ``POST /ocsp/{caId}`` (``application/ocsp-request``) and ``GET /ocsp/{caId}/{request}``
(the base64 request, URL-encoded, in the path; RFC 6960 appendix A).

Every answer is an OCSP response with HTTP 200, as OCSP clients expect: ``successful`` with a status
signed by the CA's delegated responder (``good``, ``revoked`` with time and reason, or ``unknown`` for a
serial the CA never issued), or an unsigned ``malformedRequest`` / ``unauthorized`` (not our CA, or a
CertID naming another issuer) / ``tryLater`` (no responder yet, database busy). The status is read when
the request is answered, so a revocation is visible in the next answer.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import unquote
from uuid import UUID

from aiohttp import web

from api.context import DB, OCSP_RESPONDERS, SETTINGS
from api.ocsp_responders import NotAuthoritative
from api.routing import Routes
from shared.db import ocsp as db
from shared.errors import KmsError
from shared.pki import ocsp
from shared.secrets.envelope import EnvelopeError

log = logging.getLogger("kms.api")
routes = Routes("ocsp")
OCSP = "/api/v1/cert-manager/ocsp/{caId}"
CONTENT_TYPE = "application/ocsp-response"
# An OCSP request for one certificate is about 100 bytes (a few hundred with a signature); anything much
# larger is not one.
MAX_REQUEST_BYTES = 8192


def _response(der: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=der, content_type=CONTENT_TYPE, headers=headers)


def _error(status: str) -> web.Response:
    return _response(ocsp.unsuccessful(status), {"Cache-Control": "no-store"})  # type: ignore[arg-type]


async def _answer(request: web.Request, der: bytes) -> web.Response:
    try:
        ca_id = UUID(request.match_info["caId"])
    except ValueError:
        return _error("unauthorized")
    try:
        query = ocsp.parse_request(der)
    except ocsp.MalformedOcspRequest as exc:
        log.info("OCSP request refused", extra={"ca_id": str(ca_id), "error": str(exc)})
        return _error("malformed")
    try:
        responder = await request.app[OCSP_RESPONDERS].get(ca_id)
        if responder is None:
            return _error("try_later")
        if not ocsp.names_issuer(query, responder.ca_certificate):
            return _error("unauthorized")
        found = await db.serial_status(request.app[DB], ca_id, format(query.serial, "x"))
    except NotAuthoritative:
        return _error("unauthorized")
    except KmsError:  # the database pool is exhausted (503 elsewhere): the client asks again later
        return _error("try_later")
    except EnvelopeError:
        log.error("an OCSP responder key does not decrypt", extra={"ca_id": str(ca_id)})
        return _error("internal_error")
    now = datetime.now(UTC).replace(microsecond=0)
    if found is None:
        status: ocsp.Status = "unknown"
    elif found.revoked_at is not None:
        status = "revoked"
        now = max(now, found.revoked_at.replace(microsecond=0))  # the status is known as of the revocation
    else:
        status = "good"
    validity = timedelta(seconds=request.app[SETTINGS].ocsp_response_validity_seconds)
    next_update = min(now + validity, responder.not_after)
    body = ocsp.build_response(query, status=status, responder_cert=responder.certificate,
                               responder_key=responder.key, this_update=now, next_update=next_update,
                               revoked_at=found.revoked_at if found else None,
                               reason=found.revocation_reason if found else None)
    request.app[OCSP_RESPONDERS].count_signed(responder)
    # Cacheable until nextUpdate, but revalidated: a revocation shows in the next answer, not a cache's.
    return _response(body, {"Cache-Control": "public, no-cache",
                            "Last-Modified": format_datetime(now, usegmt=True),
                            "Expires": format_datetime(next_update, usegmt=True)})


@routes.route("POST", OCSP, summary="OCSP (RFC 6960): the status of a certificate of this CA (public)",
              public=True)
async def ocsp_post(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        return _error("malformed")
    der = await request.content.read(MAX_REQUEST_BYTES + 1)
    if len(der) > MAX_REQUEST_BYTES:
        return _error("malformed")
    return await _answer(request, der)


@routes.route("GET", OCSP + "/{ocspRequest}", patterns={"ocspRequest": ".+"},
              summary="OCSP (RFC 6960) by GET: the base64 request, URL-encoded, in the path (public)", public=True)
async def ocsp_get(request: web.Request) -> web.Response:
    # From the raw path: the base64 text may hold '/' and '+', which an already-decoded path would blur.
    raw = request.raw_path.split("?", 1)[0]
    prefix = f"/api/v1/cert-manager/ocsp/{request.match_info['caId']}/"
    text = unquote(raw[len(prefix):] if raw.startswith(prefix) else request.match_info["ocspRequest"])
    if len(text) > MAX_REQUEST_BYTES * 2:
        return _error("malformed")
    text = text.replace("-", "+").replace("_", "/").strip()  # the URL-safe alphabet too
    try:
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return _error("malformed")
    return await _answer(request, der)
