"""The routes of ``/api/v1/cert-manager/ca/internal`` (internal certificate authorities)."""

from __future__ import annotations

from aiohttp import web

from api.auth import current_identity
from api.authorities.schemas import (
    CaCertificate,
    CaCertificateVersion,
    CaCertificateVersions,
    CaList,
    CaView,
    CreateCaBody,
    UpdateCaBody,
)
from api.body import parse, path_uuid, query_int, query_uuid
from api.context import BROKER, DB, NOTIFICATIONS, SETTINGS
from api.render import json_response
from api.routing import Routes, absolute_url
from shared import access, tasks
from shared.authorities import record_ca
from shared.db import audit
from shared.db import authorities as db
from shared.db.authorities import Authority
from shared.errors import Conflict, NotFound

routes = Routes("certificate authorities")
BASE = "/api/v1/cert-manager/ca/internal"
# How long POST waits for the worker before answering 202 when no ?wait is given: key generation is fast
# except RSA 4096. ?wait=N (extension, N <= 30) sets it.
CREATE_WAIT_SECONDS = 10
MAX_WAIT_SECONDS = 30


async def _authority(request: web.Request, minimum_role: str = "viewer") -> Authority:
    ca = await db.get(request.app[DB], path_uuid(request, "caId"))
    identity = current_identity(request)
    # An ACME CA is not an internal one: it answers under /ca/acme only.
    if ca is None or ca.project_id != identity.project_id or ca.type == "acme":
        raise NotFound("no such CA")
    access.authorize(identity, ca.project_id, minimum_role)
    return ca


@routes.route("POST", BASE, summary="Create an internal root or intermediate CA", body=CreateCaBody,
              response=CaView, status=201,
              query={"wait": "extension: seconds (<= 30) to wait for the key and certificate before 202"})
async def create(request: web.Request) -> web.Response:
    wait = query_int(request, "wait", default=CREATE_WAIT_SECONDS, low=0, high=MAX_WAIT_SECONDS)
    body = await parse(request, CreateCaBody)
    identity = current_identity(request)
    access.authorize(identity, body.project_id, "admin")
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        ca = await record_ca(conn, body.new_ca())
        await audit.record(conn, project_id=body.project_id, actor=f"identity:{identity.id}", action="ca.request",
                           subject_type="ca", subject_id=str(ca.id), details={"type": ca.type})
    # After the commit, sending is best effort: the reconciler re-sends a CA left pending (DESIGN.md 4.1),
    # so a broker hiccup must not answer 503 for a CA that exists (the retry would make a second one).
    await request.app[BROKER].send_best_effort(tasks.CREATE_CA, [str(ca.id)])

    async def read() -> Authority:
        return await db.get(pool, ca.id) or ca

    ca = await request.app[NOTIFICATIONS].wait_for(f"ca:{ca.id}", read, lambda c: c.status != "pending",
                                                    wait)
    location = absolute_url(request, request.app[SETTINGS].public_url, f"{BASE}/{ca.id}")
    status = 202 if ca.status == "pending" else 201
    headers = {"Location": location}
    if status == 202:
        headers["Retry-After"] = "2"
    return json_response(CaView.of(ca).to_json(), status=status, headers=headers)


@routes.route("GET", BASE, summary="List a project's CAs", response=CaList, query={"projectId": "project"})
async def list_cas(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    items = await db.list_for_project(request.app[DB], project_id)
    return json_response(CaList([CaView.of(ca) for ca in items]).to_json())


@routes.route("GET", BASE + "/{caId}", summary="A CA", response=CaView)
async def get(request: web.Request) -> web.Response:
    return json_response(CaView.of(await _authority(request)).to_json())


@routes.route("GET", BASE + "/{caId}/certificate", summary="A CA's certificate and chain (PEM)",
              response=CaCertificate)
async def certificate(request: web.Request) -> web.Response:
    ca = await _authority(request)
    if ca.certificate_pem is None or ca.serial_number is None:
        raise Conflict(f"CA is {ca.status}; it has no certificate yet")
    return json_response(CaCertificate(certificate=ca.certificate_pem, certificate_chain=ca.chain_pem or "",
                                           serial_number=ca.serial_number).to_json())


@routes.route("PATCH", BASE + "/{caId}", summary="Enable or disable a CA", body=UpdateCaBody, response=CaView)
async def update(request: web.Request) -> web.Response:
    ca = await _authority(request, "admin")
    body = await parse(request, UpdateCaBody)
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        updated = await db.set_status(conn, ca.id, ca.project_id, body.status)
        if updated is None:
            raise Conflict(f"CA is {ca.status}; only an active or disabled CA can change status")
        await audit.record(conn, project_id=ca.project_id, actor=f"identity:{current_identity(request).id}",
                           action=f"ca.{body.status}", subject_type="ca", subject_id=str(ca.id))
    return json_response(CaView.of(updated).to_json())


@routes.route("GET", BASE + "/{caId}/ca-certificates", summary="Every certificate a CA has had (PEM)",
              response=CaCertificateVersions)
async def ca_certificates(request: web.Request) -> web.Response:
    ca = await _authority(request)
    versions = []
    if ca.certificate_pem is not None and ca.serial_number is not None:
        versions.append(CaCertificateVersion(certificate=ca.certificate_pem, certificate_chain=ca.chain_pem or "",
                                             serial_number=ca.serial_number, version=1))
    return json_response(CaCertificateVersions(versions).to_json())


@routes.route("DELETE", BASE + "/{caId}", summary="Delete a CA nothing uses any more", response=CaView)
async def delete(request: web.Request) -> web.Response:
    """Refused with 409 while a child CA, a profile or a certificate refers to the CA: its certificates
    stay verifiable and its profiles keep issuing until they are deleted first. Answers the deleted CA."""
    ca = await _authority(request, "admin")
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        used = await db.references(conn, ca.id)
        if used:
            listed = ", ".join(f"{n} {what}" for what, n in used.items())
            raise Conflict(f"CA {ca.name!r} is still used by {listed}; delete those first")
        deleted = await db.delete(conn, ca.id, ca.project_id)
        if deleted is None:
            raise NotFound("no such CA")
        await audit.record(conn, project_id=ca.project_id, actor=f"identity:{current_identity(request).id}",
                           action="ca.delete", subject_type="ca", subject_id=str(ca.id),
                           details={"name": ca.name, "serial": ca.serial_number})
    return json_response(CaView.of(deleted).to_json())
