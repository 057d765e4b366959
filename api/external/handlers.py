"""The routes of ``/api/v1/cert-manager/ca/acme`` (external ACME CAs) and of the http-01 answers.

They mirror the internal CA routes (``api.authorities``): the CA bare, the upstream error body, 404 for
another project's CA. The API records an ACME CA as pending; a worker makes its account key (sealed under
the CA root key, which no API process holds) and registers the account upstream (``worker.external``).
The EAB HMAC key and the TSIG secret the creator gives are sealed at once under the project's data key,
bound to the CA's row, and the worker re-seals them under the CA root key: they are never stored in the
clear nor answered back.
"""

from __future__ import annotations

import json
import uuid
from functools import partial

from aiohttp import web

from api.auth import current_identity
from api.authorities.handlers import CREATE_WAIT_SECONDS, MAX_WAIT_SECONDS
from api.authorities.schemas import UpdateCaBody
from api.body import parse, path_uuid, query_int, query_uuid
from api.context import BROKER, DB, NOTIFICATIONS, SETTINGS
from api.external.schemas import AcmeCaList, AcmeCaView, CreateAcmeCaBody
from api.routing import Routes, absolute_url
from shared import access, tasks
from shared.db import audit
from shared.db import authorities as ca_db
from shared.db import external as db
from shared.db.authorities import Authority
from shared.db.external import ACCOUNT_TABLE, AcmeAccount
from shared.db.pool import dedicated
from shared.errors import Conflict, FieldError, NotFound
from shared.secrets.keyring import KeyRing, root_key_from

routes = Routes("certificate authorities")
challenge_routes = Routes("acme challenges")
BASE = "/api/v1/cert-manager/ca/acme"
SECRETS_TABLE = ACCOUNT_TABLE + ".secrets"


async def _acme_ca(request: web.Request, minimum_role: str = "viewer") -> tuple[Authority, AcmeAccount]:
    identity = current_identity(request)
    found = await db.get_acme_ca(request.app[DB], path_uuid(request, "caId"), identity.project_id)
    if found is None:
        raise NotFound("no such CA")
    access.authorize(identity, found[0].project_id, minimum_role)
    return found


@routes.route("POST", BASE, summary="Create an external ACME CA (a worker registers its account)",
              body=CreateAcmeCaBody, response=AcmeCaView, status=201,
              query={"wait": "extension: seconds (<= 30) to wait for the account before 202"})
async def create(request: web.Request) -> web.Response:
    wait = query_int(request, "wait", default=CREATE_WAIT_SECONDS, low=0, high=MAX_WAIT_SECONDS)
    body = await parse(request, CreateAcmeCaBody)
    identity = current_identity(request)
    access.authorize(identity, body.project_id, "admin")
    settings = request.app[SETTINGS]
    c = body.configuration
    ca_id = uuid.uuid4()
    sealed = None
    secrets = c.secrets()
    if secrets:
        # A key ring that may seal (it creates the project's data key if there is none yet); the worker
        # moves these under the CA root key when it registers the account.
        ring = KeyRing(root_key_from(settings), connect=partial(dedicated, settings.database_url))
        sealed = await ring.seal(request.app[DB], body.project_id, json.dumps(secrets).encode(),
                                 table=SECRETS_TABLE, row_id=ca_id)
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        ca = await db.insert_acme_ca(
            conn, ca_id=ca_id, project_id=body.project_id, name=body.name, status_after_creation=body.status,
            directory_url=c.directory_url, account_email=c.account_email, eab_kid=c.eab_kid,
            dns_provider=c.dns_provider_config.stored() if c.dns_provider_config else None, ca_bundle=c.ca_bundle,
            encrypted_secrets=sealed)
        if ca is None:
            raise Conflict(f"a CA named {body.name!r} already exists in this project",
                           [FieldError("name", "already in use")])
        await audit.record(conn, project_id=body.project_id, actor=f"identity:{identity.id}", action="ca.request",
                           subject_type="ca", subject_id=str(ca.id),
                           details={"type": "acme", "directoryUrl": c.directory_url})
    # Best effort after the commit: the reconciler re-sends an ACME CA left pending.
    await request.app[BROKER].send_best_effort(tasks.REGISTER_ACME_ACCOUNT, [str(ca_id)])

    async def read() -> tuple[Authority, AcmeAccount] | None:
        return await db.get_acme_ca(pool, ca_id)

    found = await request.app[NOTIFICATIONS].wait_for(f"ca:{ca_id}", read,
                                                      lambda f: f is None or f[0].status != "pending", wait)
    assert found is not None
    location = absolute_url(request, settings.public_url, f"{BASE}/{ca_id}")
    status = 202 if found[0].status == "pending" else 201
    headers = {"Location": location}
    if status == 202:
        headers["Retry-After"] = "2"
    return web.json_response(AcmeCaView.of(*found).to_json(), status=status, headers=headers)


@routes.route("GET", BASE, summary="List a project's ACME CAs", response=AcmeCaList, query={"projectId": "project"})
async def list_cas(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    items = await db.list_acme_cas(request.app[DB], project_id)
    return web.json_response(AcmeCaList([AcmeCaView.of(ca, account) for ca, account in items]).to_json())


@routes.route("GET", BASE + "/{caId}", summary="An ACME CA", response=AcmeCaView)
async def get(request: web.Request) -> web.Response:
    return web.json_response(AcmeCaView.of(*await _acme_ca(request)).to_json())


@routes.route("PATCH", BASE + "/{caId}", summary="Enable or disable an ACME CA", body=UpdateCaBody,
              response=AcmeCaView)
async def update(request: web.Request) -> web.Response:
    ca, account = await _acme_ca(request, "admin")
    body = await parse(request, UpdateCaBody)
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        updated = await ca_db.set_status(conn, ca.id, ca.project_id, body.status)
        if updated is None:
            raise Conflict(f"CA is {ca.status}; only an active or disabled CA can change status")
        await audit.record(conn, project_id=ca.project_id, actor=f"identity:{current_identity(request).id}",
                           action=f"ca.{body.status}", subject_type="ca", subject_id=str(ca.id))
    return web.json_response(AcmeCaView.of(updated, account).to_json())


@routes.route("DELETE", BASE + "/{caId}", summary="Delete an ACME CA nothing uses any more", response=AcmeCaView)
async def delete(request: web.Request) -> web.Response:
    """Refused with 409 while a profile or a certificate refers to the CA (as for internal CAs)."""
    ca, account = await _acme_ca(request, "admin")
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        used = await ca_db.references(conn, ca.id)
        if used:
            listed = ", ".join(f"{n} {what}" for what, n in used.items())
            raise Conflict(f"CA {ca.name!r} is still used by {listed}; delete those first")
        deleted = await ca_db.delete(conn, ca.id, ca.project_id)
        if deleted is None:
            raise NotFound("no such CA")
        await audit.record(conn, project_id=ca.project_id, actor=f"identity:{current_identity(request).id}",
                           action="ca.delete", subject_type="ca", subject_id=str(ca.id),
                           details={"name": ca.name, "type": "acme"})
    return web.json_response(AcmeCaView.of(deleted, account).to_json())


@challenge_routes.route("GET", "/.well-known/acme-challenge/{token}",
                        summary="http-01 answers for external ACME CAs (RFC 8555 8.3; public)", public=True)
async def http01(request: web.Request) -> web.Response:
    """Served from the database, where the worker driving the order wrote it: the API calls nobody."""
    token = request.match_info["token"]
    if not token or len(token) > 256:
        raise NotFound("no such challenge")
    answer = await db.http01_answer(request.app[DB], token)
    if answer is None:
        raise NotFound("no such challenge")
    return web.Response(text=answer, content_type="application/octet-stream")
