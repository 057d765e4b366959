"""Profiles, the request-a-certificate form, and a request's page that follows it live until it ends.

A request is made through the registration authority (``shared.registration.register_request``), as the
API's issue endpoint does, and handed to the workers the same way (the broker's doorbell); a refusal
shows every violation at once, each beside the field it concerns.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, get_args
from uuid import UUID

from aiohttp import web

from api.body import query_int, validate
from api.context import BROKER, DB, ISSUING_CONTEXTS, NOTIFICATIONS
from api.web.base import Visit, field_map, page, path_uuid, redirect
from api.web.summary import policy_sentences
from shared import registration
from shared.db import policies as policies_db
from shared.db import requests as requests_db
from shared.db.requests import RequestWithCertificate
from shared.errors import FieldError, Forbidden, KmsError, NotFound
from shared.policy.attributes import IssueAttributes, KeyAlgorithmName
from shared.profiles import IssuingContext

KEY_ALGORITHMS: Final = list(get_args(KeyAlgorithmName))
FINAL: Final = ("issued", "failed")
MAX_WAIT_SECONDS: Final = 30
# Where the service's field paths are shown on the form; anything else is listed above it.
FORM_FIELDS: Final = {"attributes.commonName": "commonName", "attributes.altNames": "altNames",
                      "attributes.ttl": "ttl", "attributes.notAfter": "ttl", "attributes.notBefore": "ttl",
                      "attributes.keyAlgorithm": "keyAlgorithm", "csr": "csr"}


def wire_status(status: str) -> str:
    """As the API names it: a request a worker is signing ('processing') is still pending."""
    return "pending" if status == "processing" else status


async def _context(visit: Visit, profile_id: UUID) -> IssuingContext:
    ctx = await visit.request.app[ISSUING_CONTEXTS].get(visit.request.app[DB], profile_id)
    if ctx is None or ctx.profile.project_id != visit.project_id:
        raise NotFound("no such certificate profile in this project")
    return ctx


@page("GET", "/projects/{projectId}/profiles", summary="A project's certificate profiles and their policies")
async def profiles(visit: Visit) -> web.StreamResponse:
    pool = visit.request.app[DB]
    rows, _ = await policies_db.list_profiles(pool, visit.project_id, limit=100)
    shown = []
    for row in rows:
        ctx = await visit.request.app[ISSUING_CONTEXTS].get(pool, row.id)
        if ctx is not None:
            shown.append({"profile": row, "ca": ctx.ca, "policy": policy_sentences(ctx.rules, ctx.defaults)})
    return visit.render("profiles.html", profiles=shown)


def alt_names(text: str) -> list[dict[str, str]]:
    """One name a line (or comma-separated): IP addresses, e-mail addresses and URIs by their shape, else a
    DNS name."""
    out = []
    for value in (v.strip() for line in text.splitlines() for v in line.split(",")):
        if not value:
            continue
        try:
            ipaddress.ip_address(value)
            kind = "ip_address"
        except ValueError:
            kind = "uri" if "://" in value else "email" if "@" in value else "dns_name"
        out.append({"type": kind, "value": value})
    return out


def attributes_of(form: dict[str, str]) -> tuple[str | None, IssueAttributes | None]:
    """The CSR (if pasted) and the attributes the form asks for, as the issue endpoint reads them."""
    csr = form.get("csr", "").strip() or None
    given: dict[str, Any] = {}
    if csr is None:
        if form.get("commonName", "").strip():
            given["commonName"] = form["commonName"].strip()
        if names := alt_names(form.get("altNames", "")):
            given["altNames"] = names
        if form.get("keyAlgorithm"):
            given["keyAlgorithm"] = form["keyAlgorithm"]
    if form.get("ttl", "").strip():
        given["ttl"] = form["ttl"].strip()
    return csr, validate(IssueAttributes, given, "attributes") if given else None


async def _form(visit: Visit, ctx: IssuingContext, *, status: int = 200, errors: dict[str, list[str]] | None = None
                ) -> web.StreamResponse:
    return visit.render("request_form.html", status=status, profile=ctx.profile, errors=errors or {},
                        form=visit.form, key_algorithms=KEY_ALGORITHMS,
                        policy=policy_sentences(ctx.rules, ctx.defaults))


def _need_issuer(visit: Visit) -> None:
    if not visit.allows("issuer"):
        raise Forbidden(f"requesting a certificate needs the issuer role; you are {visit.me.role} in this project")


@page("GET", "/projects/{projectId}/profiles/{profileId}/request", summary="The request-a-certificate form")
async def request_form(visit: Visit) -> web.StreamResponse:
    ctx = await _context(visit, path_uuid(visit, "profileId"))
    _need_issuer(visit)
    return await _form(visit, ctx)


@page("POST", "/projects/{projectId}/profiles/{profileId}/request", summary="Request a certificate from a profile")
async def request_certificate(visit: Visit) -> web.StreamResponse:
    ctx = await _context(visit, path_uuid(visit, "profileId"))
    _need_issuer(visit)
    try:
        csr, attributes = attributes_of(visit.form)
        registered = await registration.register_request(
            visit.request.app[DB], ctx, csr_pem=csr, attributes=attributes, remove_roots=False,
            requested_by=visit.user.id)
    except KmsError as err:
        errors = field_map(err.errors or [FieldError("", err.detail)], FORM_FIELDS)
        return await _form(visit, ctx, status=err.status, errors=errors)
    # As the API's issue endpoint: an external CA's request to its own task, others to the signers' doorbell.
    await visit.request.app[BROKER].enqueue(str(registered.request.id), registered.request.issuer_kind)
    return redirect(visit.url(f"/requests/{registered.request.id}"))


async def _request(visit: Visit, wait: float) -> RequestWithCertificate:
    """The path's request of this project, once final or when ``wait`` seconds have passed."""
    pool = visit.request.app[DB]
    request_id, project_id = path_uuid(visit, "requestId"), visit.project_id

    async def read() -> RequestWithCertificate | None:
        return await requests_db.request_with_certificate(pool, request_id, project_id)

    found = await visit.request.app[NOTIFICATIONS].wait_for(
        f"req:{request_id}", read, lambda f: f is None or f.request.status in FINAL, wait)
    if found is None:
        raise NotFound("no such certificate request in this project")
    return found


def _names(found: RequestWithCertificate) -> tuple[str | None, list[str]]:
    attributes = found.request.attributes or {}
    return attributes.get("commonName"), [n.get("value", "") for n in attributes.get("altNames", [])]


@page("GET", "/projects/{projectId}/requests/{requestId}", summary="A certificate request, followed live")
async def request_page(visit: Visit) -> web.StreamResponse:
    found = await _request(visit, 0)
    common_name, names = _names(found)
    return visit.render("request.html", found=found, state=wire_status(found.request.status),
                        common_name=common_name, names=names,
                        status_url=visit.url(f"/requests/{found.request.id}/status"),
                        certificate_url=visit.url(f"/certificates/{found.request.certificate_id}")
                        if found.request.certificate_id else None)


@page("GET", "/projects/{projectId}/requests/{requestId}/status",
      summary="A certificate request's status for its page's script (long-poll with ?wait=N)", json=True)
async def request_status(visit: Visit) -> web.StreamResponse:
    wait = query_int(visit.request, "wait", default=0, low=0, high=MAX_WAIT_SECONDS)
    found = await _request(visit, wait)
    row = found.request
    return web.json_response({
        "status": wire_status(row.status), "final": row.status in FINAL, "errorMessage": row.error_message,
        "certificateUrl": visit.url(f"/certificates/{row.certificate_id}") if row.certificate_id else None,
        "serialNumber": found.certificate.serial_number if found.certificate else None,
    })
