"""Public PKI files: a CA's CRL (DER and PEM) and its certificate (the AIA caIssuers target).

``crlId`` in the public CRL URLs is the CA's id: each CA has one current CRL, the newest a worker
signed, so the URL a certificate carries in its CRL distribution point stays valid for its whole life.
A CRL is never served past its nextUpdate (DESIGN.md invariant 9): a stale or missing one is asked of a
worker and waited for briefly, else the answer is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from uuid import UUID

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from api.auth import current_identity
from api.body import path_uuid
from api.context import BROKER, DB
from api.pki_files.schemas import CrlItem, CrlList
from api.render import json_response
from api.routing import Routes
from shared import access
from shared import tasks as task_names
from shared.db import Executor
from shared.db import authorities as authorities_db
from shared.db import revocation as db
from shared.db.revocation import CrlRow
from shared.errors import NotFound, ServiceUnavailable

routes = Routes("pki-files")
CRL = "/api/v1/cert-manager/crl/{crlId}"
CA = "/api/v1/cert-manager/ca/internal/{caId}"
FIRST_CRL_WAIT_SECONDS = 3.0


def crl_pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN X509 CRL-----\n{lines}\n-----END X509 CRL-----\n"


async def _current_crl(request: web.Request, pool: Executor, ca_id: UUID) -> CrlRow:
    latest = await db.latest_crl(pool, ca_id)
    if latest is not None and latest.next_update > datetime.now(UTC):
        return latest
    ca = await authorities_db.get(pool, ca_id)
    if ca is None:
        raise NotFound("no such CRL")
    if ca.status not in ("active", "disabled"):
        raise NotFound(f"the CA is {ca.status}: it has no key, so no CRL")
    # No CRL yet (a CA made before revocation existed) or a stale one: a worker signs it, we wait briefly.
    await request.app[BROKER].send_best_effort(task_names.SIGN_CRL, [str(ca_id)])
    deadline = time.monotonic() + FIRST_CRL_WAIT_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        latest = await db.latest_crl(pool, ca_id)
        if latest is not None and latest.next_update > datetime.now(UTC):
            return latest
    raise ServiceUnavailable("no current CRL for this CA yet; a worker is signing it", retry_after=2)


def _crl_headers(crl: CrlRow) -> dict[str, str]:
    # Cacheable, but revalidated: a revocation must show within seconds, not after a cache's max-age.
    return {"Cache-Control": "public, no-cache", "ETag": f'"{crl.ca_id}-{crl.crl_number}"',
            "Last-Modified": format_datetime(crl.this_update.astimezone(UTC), usegmt=True),
            "Expires": format_datetime(crl.next_update.astimezone(UTC), usegmt=True)}


def _not_modified(request: web.Request, headers: dict[str, str]) -> bool:
    return request.headers.get("If-None-Match") == headers["ETag"]


@routes.route("GET", CRL + "/der", summary="A CA's current CRL, DER (crlId is the CA's id; public)", public=True)
async def crl_der(request: web.Request) -> web.Response:
    crl = await _current_crl(request, request.app[DB], path_uuid(request, "crlId"))
    headers = _crl_headers(crl)
    if _not_modified(request, headers):
        return web.Response(status=304, headers=headers)
    return web.Response(body=crl.der, content_type="application/pkix-crl", headers=headers)


@routes.route("GET", CRL, summary="A CA's current CRL, PEM (crlId is the CA's id; public)", public=True)
async def crl_pem_route(request: web.Request) -> web.Response:
    crl = await _current_crl(request, request.app[DB], path_uuid(request, "crlId"))
    headers = _crl_headers(crl)
    if _not_modified(request, headers):
        return web.Response(status=304, headers=headers)
    return web.Response(text=crl_pem(crl.der), content_type="application/x-pem-file", headers=headers)


@routes.route("GET", CA + "/crls", summary="A CA's CRLs (PEM): its current one", response=CrlList)
async def list_crls(request: web.Request) -> web.Response:
    identity = current_identity(request)
    ca_id = path_uuid(request, "caId")
    pool = request.app[DB]
    ca = await authorities_db.get(pool, ca_id, identity.project_id)
    if ca is None:
        raise NotFound("no such CA")
    access.authorize(identity, ca.project_id, "viewer")
    found = await db.crls(pool, ca_id)
    if not found and ca.status in ("active", "disabled"):
        found = [await _current_crl(request, pool, ca_id)]
    items = CrlList([CrlItem(id=ca_id, crl=crl_pem(c.der)) for c in found])
    return json_response(items.model_dump(mode="json", by_alias=True))


@routes.route("GET", CA + "/certificates/{caCertId}/der",
              summary="A CA's certificate, DER: the AIA caIssuers target (caCertId is the CA's id; public)",
              public=True)
async def ca_certificate_der(request: web.Request) -> web.Response:
    ca_id = path_uuid(request, "caId")
    cert_id = path_uuid(request, "caCertId")
    ca = await authorities_db.get(request.app[DB], ca_id)
    if ca is None or cert_id != ca_id or ca.certificate_pem is None:
        raise NotFound("no such CA certificate")
    der = x509.load_pem_x509_certificate(ca.certificate_pem.encode()).public_bytes(Encoding.DER)
    return web.Response(body=der, content_type="application/pkix-cert",
                        headers={"Cache-Control": "public, max-age=3600"})
