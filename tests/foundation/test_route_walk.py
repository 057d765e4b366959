"""Roles and tenancy, walked from the route table (DESIGN.md section 4, invariant 8, and the roles of 6).

Every route the app serves is called by each role of project A (admin, issuer, viewer) against A's real
resources (a CA chain, a policy, a profile, a certificate with a server-generated key, a batch, all made
through the API), by project B's admin against the same ids, and without a token. Each answer must be
the one the role and the project allow: the route's 2xx where the role suffices, 403 where it is too
low, 404 for another project's resources (never 403, never 2xx), 401 without a token, except on the
public routes. A refused caller writes nothing, and no caller who may not read private keys ever
receives one.

The routes come from the list the app installs (``api.app.ROUTE_TABLES``); the expectations below are
written out by hand. A route added to the app without an entry in ``EXPECTED`` fails this module until
someone decides who may call it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.app import ROUTE_TABLES, create_app
from api.context import ENDPOINTS
from shared.config import Settings
from tests.api_client import ApiClient, assert_problem, login
from tests.conftest import bootstrap
from tests.pki_setup import CA, ISSUE, OPEN_POLICY, POLICIES, PROFILES, REQUESTS, make_pki
from tests.stack import Stack

BATCHES = "/api/v1/cert-manager/certificate-batches"
APPLICATIONS = "/api/v1/cert-manager/applications"
Route = tuple[str, str]  # (method, path template), as the route table spells them
# The routes the app installs, in the order it installs them (api.app.create_app builds the same list).
ALL_ROUTES: list[Route] = [(ep.method, ep.path) for table in ROUTE_TABLES for ep in table.endpoints]
# SKIPPED HERE: the web UI's pages (api.web, route table tag "web"). They authenticate by a session cookie
# and answer HTML (a sign-in redirect, a 403 or 404 page), not by bearer token and problem+json, so this
# walk's callers do not fit them. tests/web/ checks their roles and tenancy in a browser (a viewer is
# refused the users page and sees no key download, another project's pages and certificates are 404
# pages, signed-out visits go to the sign-in page, every POST needs the session's CSRF token).
WEB_ROUTES: list[Route] = [(ep.method, ep.path) for table in ROUTE_TABLES for ep in table.endpoints
                           if ep.tag == "web"]
ROUTES: list[Route] = [route for route in ALL_ROUTES if route not in WEB_ROUTES]
# Written out here rather than imported, so a change of the ranks in shared.access shows up as a failure.
RANK = {"viewer": 0, "issuer": 1, "admin": 2}
KEY_ROLES = ("issuer", "admin")  # who may read a server-generated private key
CALLERS = ("admin", "issuer", "viewer", "other-project", "anonymous")
PEM_KEY_MARKER = "PRIVATE KEY-----"


@dataclass(frozen=True)
class Caller:
    token: str | None
    identity_id: str | None


@dataclass(frozen=True)
class World:
    """Project A's resources, and a token for each caller (``other-project`` is project B's admin)."""

    project_id: str
    project_slug: str
    callers: dict[str, Caller]
    viewer_credentials: dict[str, str]
    root_id: str
    issuing_id: str
    policy_id: str
    profile_id: str
    request_id: str
    certificate_id: str
    batch_id: str


@dataclass(frozen=True)
class Call:
    path: str
    body: Any = None
    params: dict[str, str] | None = None


# Builds the call against project A; it may first create a target of its own through A's admin (the
# deleting routes do, so that a deletion that should not happen cannot break the shared world either).
Build = Callable[[World, ApiClient], Awaitable[Call]]


@dataclass(frozen=True)
class Expect:
    role: str | None  # the least role that may call the route; None: a public route
    ok: tuple[int, ...]  # the answer when the role suffices
    build: Build
    key: bool = False  # the answer carries the server-generated key to a caller allowed to read it


def at(make: Callable[[World], Call]) -> Build:
    async def build(world: World, admin: ApiClient) -> Call:
        return make(world)
    return build


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def identities(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/identities"


def server_key_attributes(name: str) -> dict[str, Any]:
    return {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}


def root_ca_body(project_id: str) -> dict[str, Any]:
    return {"projectId": project_id, "name": unique("walk-root"),
            "configuration": {"type": "root", "commonName": "Walk Root", "keyAlgorithm": "EC_prime256v1",
                              "ttl": "1y"}}


def profile_body(world: World) -> dict[str, Any]:
    return {"projectId": world.project_id, "slug": unique("walk"), "issuerType": "ca", "caId": world.issuing_id,
            "certificatePolicyId": world.policy_id, "enrollmentType": "api", "apiConfig": {"autoRenew": False},
            "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1", "extendedKeyUsages": ["server_auth"]}}


async def created(admin: ApiClient, path: str, body: dict[str, Any], id_field: str = "id",
                  wrapper: str | None = None) -> str:
    r = await admin.post(path, body)
    assert r.status == 201, (path, r.status, r.body)
    new_id: str = (r.body[wrapper] if wrapper else r.body)[id_field]
    return new_id


async def fresh_identity(world: World, admin: ApiClient) -> Call:
    body = {"name": unique("doomed"), "role": "viewer"}
    identity_id = await created(admin, identities(world.project_id), body, "identityId")
    return Call(f"{identities(world.project_id)}/{identity_id}")


async def fresh_ca(world: World, admin: ApiClient) -> Call:
    """A root CA nothing uses, for DELETE (a CA that a profile or certificate uses is 409)."""
    return Call(f"{CA}/{await created(admin, CA, root_ca_body(world.project_id))}")


ACME_CA = "/api/v1/cert-manager/ca/acme"


def acme_ca_body(project_id: str) -> dict[str, Any]:
    """An ACME CA whose directory nobody serves (nothing listens on port 9): it stays pending while the
    worker retries its account, which is all the walk needs."""
    return {"projectId": project_id, "name": unique("walk-acme"),
            "configuration": {"directoryUrl": "https://127.0.0.1:9/dir", "accountEmail": "walk@example.test"}}


def on_acme_ca(tail: str = "", body: Any = None) -> Build:
    async def build(world: World, admin: ApiClient) -> Call:
        r = await admin.post(ACME_CA, acme_ca_body(world.project_id), params={"wait": "0"})
        assert r.status == 202, (r.status, r.body)
        return Call(f"{ACME_CA}/{r.body['id']}{tail}", body)
    return build


async def fresh_policy(world: World, admin: ApiClient) -> Call:
    body = {"projectId": world.project_id, "name": unique("doomed"), **OPEN_POLICY}
    return Call(f"{POLICIES}/{await created(admin, POLICIES, body, wrapper='certificatePolicy')}")


async def fresh_profile(world: World, admin: ApiClient) -> Call:
    return Call(f"{PROFILES}/{await created(admin, PROFILES, profile_body(world), wrapper='certificateProfile')}")


def application_body(world: World, profiles: bool = True) -> dict[str, Any]:
    return {"projectId": world.project_id, "name": unique("walk-app"),
            "profileIds": [world.profile_id] if profiles else []}


async def fresh_application(world: World, admin: ApiClient, profiles: bool = True) -> tuple[str, str]:
    """A new application of project A (with the world's profile): its id and name."""
    body = application_body(world, profiles)
    return await created(admin, APPLICATIONS, body, wrapper="application"), body["name"]


def on_application(tail: str, body: Callable[[World], Any] | None = None, profiles: bool = True) -> Build:
    async def build(world: World, admin: ApiClient) -> Call:
        application_id, _ = await fresh_application(world, admin, profiles)
        return Call(f"{APPLICATIONS}/{application_id}{tail}".replace("{profileId}", world.profile_id),
                    body(world) if body else None)
    return build


async def application_by_name(world: World, admin: ApiClient) -> Call:
    _, name = await fresh_application(world, admin)
    return Call(f"{APPLICATIONS}/by-name/{name}", params={"projectId": world.project_id})


async def fresh_certificate(world: World, admin: ApiClient) -> Call:
    r = await admin.post(ISSUE, {"profileId": world.profile_id, "attributes": server_key_attributes(
        f"{unique('doomed')}.example.test")}, params={"wait": "10"})
    assert r.status == 200 and r.body["certificate"], (r.status, r.body)
    return Call(f"{ISSUE}/{r.body['certificate']['certificateId']}")


async def fresh_revocation(world: World, admin: ApiClient) -> Call:
    """A new certificate to revoke (revoking the same one twice is 409)."""
    path = (await fresh_certificate(world, admin)).path
    return Call(f"{path}/revoke", {"revocationReason": "SUPERSEDED"})


ACME = "/api/v1/cert-manager/acme/profiles/{profileId}"


async def fresh_acme_profile(world: World, admin: ApiClient) -> str:
    body = {**profile_body(world), "enrollmentType": "acme", "acmeConfig": {"skipEabBinding": False}}
    del body["apiConfig"]
    return await created(admin, PROFILES, body, wrapper="certificateProfile")


def on_acme(tail: str) -> Build:
    """An ACME resource of a new ACME profile: public routes (the JWS authenticates); a POST without an
    application/jose+json body is 415 for every caller, before anything is looked up."""
    async def build(world: World, admin: ApiClient) -> Call:
        profile_id = await fresh_acme_profile(world, admin)
        return Call(ACME.replace("{profileId}", profile_id) + tail.format(id="3f1c8f52-5d8e-4a43-9d2e-0e7a3c1b9f10"))
    return build


async def eab_reveal(world: World, admin: ApiClient) -> Call:
    return Call(f"{PROFILES}/{await fresh_acme_profile(world, admin)}/acme/eab-secret/reveal")


def _cert(world: World, tail: str = "") -> Call:
    return Call(f"{ISSUE}/{world.certificate_id}{tail}")


EXPECTED: dict[Route, Expect] = {
    # -- operations and login: public --------------------------------------------------------------
    ("GET", "/healthz"): Expect(None, (200,), at(lambda w: Call("/healthz"))),
    ("GET", "/readyz"): Expect(None, (200,), at(lambda w: Call("/readyz"))),
    ("GET", "/metrics"): Expect(None, (200,), at(lambda w: Call("/metrics"))),
    ("GET", "/openapi.json"): Expect(None, (200,), at(lambda w: Call("/openapi.json"))),
    ("GET", "/api/status"): Expect(None, (200,), at(lambda w: Call("/api/status"))),
    ("POST", "/api/v1/auth/universal-auth/login"): Expect(
        None, (200,), at(lambda w: Call("/api/v1/auth/universal-auth/login", w.viewer_credentials))),
    # The token travels in the body (the KMS agent sends no header); renewing the viewer's is harmless.
    ("POST", "/api/v1/auth/token/renew"): Expect(
        None, (200,), at(lambda w: Call("/api/v1/auth/token/renew", {"accessToken": w.callers["viewer"].token}))),
    # -- the caller's project by slug: any role of it; another project's slug is 404 -----------------
    ("GET", "/api/v1/projects/slug/{slug}"): Expect(
        "viewer", (200,), at(lambda w: Call(f"/api/v1/projects/slug/{w.project_slug}"))),
    # -- identities: admin only ------------------------------------------------------------------
    ("POST", "/api/v1/projects/{projectId}/identities"): Expect(
        "admin", (201,), at(lambda w: Call(identities(w.project_id), {"name": unique("walk"), "role": "viewer"}))),
    ("GET", "/api/v1/projects/{projectId}/identities"): Expect(
        "admin", (200,), at(lambda w: Call(identities(w.project_id)))),
    ("DELETE", "/api/v1/projects/{projectId}/identities/{identityId}"): Expect("admin", (204,), fresh_identity),
    # -- CAs: admin writes, viewer reads ---------------------------------------------------------
    # 202 is the documented answer of a CA whose key takes the worker longer than the POST waits.
    ("POST", CA): Expect("admin", (201, 202), at(lambda w: Call(CA, root_ca_body(w.project_id)))),
    ("GET", CA): Expect("viewer", (200,), at(lambda w: Call(CA, params={"projectId": w.project_id}))),
    ("GET", CA + "/{caId}"): Expect("viewer", (200,), at(lambda w: Call(f"{CA}/{w.root_id}"))),
    ("GET", CA + "/{caId}/certificate"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{CA}/{w.root_id}/certificate"))),
    ("GET", CA + "/{caId}/ca-certificates"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{CA}/{w.root_id}/ca-certificates"))),
    # Setting an active CA active: the route's whole authorisation path without disabling the world's CA.
    ("PATCH", CA + "/{caId}"): Expect("admin", (200,), at(lambda w: Call(f"{CA}/{w.root_id}", {"status": "active"}))),
    ("DELETE", CA + "/{caId}"): Expect("admin", (200,), fresh_ca),
    # -- external ACME CAs: as internal ones (a pending CA cannot change status: 409 after authorisation)
    ("POST", ACME_CA): Expect("admin", (202,), at(lambda w: Call(ACME_CA, acme_ca_body(w.project_id),
                                                                 params={"wait": "0"}))),
    ("GET", ACME_CA): Expect("viewer", (200,), at(lambda w: Call(ACME_CA, params={"projectId": w.project_id}))),
    ("GET", ACME_CA + "/{caId}"): Expect("viewer", (200,), on_acme_ca()),
    ("PATCH", ACME_CA + "/{caId}"): Expect("admin", (409,), on_acme_ca("", {"status": "disabled"})),
    ("DELETE", ACME_CA + "/{caId}"): Expect("admin", (200,), on_acme_ca()),
    # http-01 answers for external CAs: public, served from the database (none for an unknown token).
    ("GET", "/.well-known/acme-challenge/{token}"): Expect(
        None, (404,), at(lambda w: Call("/.well-known/acme-challenge/no-such-token"))),
    # -- policies and profiles: admin writes, viewer reads ---------------------------------------
    ("POST", POLICIES): Expect("admin", (201,), at(lambda w: Call(
        POLICIES, {"projectId": w.project_id, "name": unique("walk"), **OPEN_POLICY}))),
    ("GET", POLICIES): Expect("viewer", (200,), at(lambda w: Call(POLICIES, params={"projectId": w.project_id}))),
    ("GET", POLICIES + "/{policyId}"): Expect("viewer", (200,), at(lambda w: Call(f"{POLICIES}/{w.policy_id}"))),
    ("PATCH", POLICIES + "/{policyId}"): Expect(
        "admin", (200,), at(lambda w: Call(f"{POLICIES}/{w.policy_id}", {"description": unique("walked")}))),
    ("DELETE", POLICIES + "/{policyId}"): Expect("admin", (200,), fresh_policy),
    ("POST", PROFILES): Expect("admin", (201,), at(lambda w: Call(PROFILES, profile_body(w)))),
    ("GET", PROFILES): Expect("viewer", (200,), at(lambda w: Call(PROFILES, params={"projectId": w.project_id}))),
    ("GET", PROFILES + "/slug/{slug}"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{PROFILES}/slug/web", params={"projectId": w.project_id}))),
    ("GET", PROFILES + "/{profileId}"): Expect("viewer", (200,), at(lambda w: Call(f"{PROFILES}/{w.profile_id}"))),
    ("PATCH", PROFILES + "/{profileId}"): Expect(
        "admin", (200,), at(lambda w: Call(f"{PROFILES}/{w.profile_id}", {"description": unique("walked")}))),
    ("DELETE", PROFILES + "/{profileId}"): Expect("admin", (200,), fresh_profile),
    ("GET", PROFILES + "/{profileId}/certificates"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{PROFILES}/{w.profile_id}/certificates"))),
    ("GET", PROFILES + "/{profileId}/certificates/latest-active-bundle"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{PROFILES}/{w.profile_id}/certificates/latest-active-bundle")),
        key=True),
    # -- applications: admin writes, viewer reads ------------------------------------------------
    ("POST", APPLICATIONS): Expect("admin", (201,), at(lambda w: Call(APPLICATIONS, application_body(w)))),
    ("GET", APPLICATIONS): Expect(
        "viewer", (200,), at(lambda w: Call(APPLICATIONS, params={"projectId": w.project_id}))),
    ("GET", APPLICATIONS + "/by-name/{name}"): Expect("viewer", (200,), application_by_name),
    ("GET", APPLICATIONS + "/{applicationId}"): Expect("viewer", (200,), on_application("")),
    ("GET", APPLICATIONS + "/{applicationId}/profiles"): Expect("viewer", (200,), on_application("/profiles")),
    ("POST", APPLICATIONS + "/{applicationId}/profiles"): Expect("admin", (200,), on_application(
        "/profiles", lambda w: {"profileIds": [w.profile_id]}, profiles=False)),
    ("DELETE", APPLICATIONS + "/{applicationId}/profiles/{profileId}"): Expect(
        "admin", (200,), on_application("/profiles/{profileId}")),
    # -- issuance: issuer issues and reads keys, viewer reads the rest ---------------------------
    ("POST", ISSUE): Expect("issuer", (202,), at(lambda w: Call(
        ISSUE, {"profileId": w.profile_id, "attributes": server_key_attributes("walk.example.test")}))),
    ("GET", REQUESTS + "/{requestId}"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{REQUESTS}/{w.request_id}")), key=True),
    ("GET", REQUESTS): Expect("viewer", (200,), at(lambda w: Call(REQUESTS, params={"projectId": w.project_id}))),
    ("POST", REQUESTS + "/search"): Expect("viewer", (200,), at(lambda w: Call(
        f"{REQUESTS}/search", {"projectId": w.project_id}))),
    ("DELETE", ISSUE + "/{certificateId}"): Expect("admin", (200,), fresh_certificate),
    ("GET", ISSUE + "/{certificateId}"): Expect("viewer", (200,), at(lambda w: _cert(w))),
    ("GET", ISSUE + "/{certificateId}/certificate"): Expect("viewer", (200,), at(lambda w: _cert(w, "/certificate"))),
    ("GET", ISSUE + "/{certificateId}/bundle"): Expect("viewer", (200,), at(lambda w: _cert(w, "/bundle")), key=True),
    ("GET", ISSUE + "/{certificateId}/private-key"): Expect(
        "issuer", (200,), at(lambda w: _cert(w, "/private-key")), key=True),
    ("POST", ISSUE + "/{certificateId}/renew"): Expect("issuer", (202,), at(lambda w: _cert(w, "/renew"))),
    ("PATCH", ISSUE + "/{certificateId}/config"): Expect(
        "issuer", (200,), at(lambda w: Call(f"{ISSUE}/{w.certificate_id}/config", {"enableAutoRenewal": False}))),
    ("POST", ISSUE + "/{certificateId}/revoke"): Expect("issuer", (200,), fresh_revocation),
    # -- public PKI files: CRLs (crlId is the CA's id) and the AIA caIssuers target; a CA's CRL list --
    ("GET", "/api/v1/cert-manager/crl/{crlId}/der"): Expect(
        None, (200,), at(lambda w: Call(f"/api/v1/cert-manager/crl/{w.root_id}/der"))),
    ("GET", "/api/v1/cert-manager/crl/{crlId}"): Expect(
        None, (200,), at(lambda w: Call(f"/api/v1/cert-manager/crl/{w.root_id}"))),
    ("GET", CA + "/{caId}/crls"): Expect("viewer", (200,), at(lambda w: Call(f"{CA}/{w.root_id}/crls"))),
    ("GET", CA + "/{caId}/certificates/{caCertId}/der"): Expect(
        None, (200,), at(lambda w: Call(f"{CA}/{w.root_id}/certificates/{w.root_id}/der"))),
    # -- ACME (DESIGN.md 8): public, the JWS authenticates; the EAB key is revealed to issuers --------
    ("GET", PROFILES + "/{profileId}/acme/eab-secret/reveal"): Expect("issuer", (200,), eab_reveal),
    ("GET", ACME + "/directory"): Expect(None, (200,), on_acme("/directory")),
    ("HEAD", ACME + "/new-nonce"): Expect(None, (200,), on_acme("/new-nonce")),
    ("GET", ACME + "/new-nonce"): Expect(None, (204,), on_acme("/new-nonce")),
    ("POST", ACME + "/new-account"): Expect(None, (415,), on_acme("/new-account")),
    ("POST", ACME + "/accounts/{accountId}"): Expect(None, (415,), on_acme("/accounts/{id}")),
    ("POST", ACME + "/accounts/{accountId}/orders"): Expect(None, (415,), on_acme("/accounts/{id}/orders")),
    ("POST", ACME + "/key-change"): Expect(None, (415,), on_acme("/key-change")),
    ("POST", ACME + "/new-order"): Expect(None, (415,), on_acme("/new-order")),
    ("POST", ACME + "/orders/{orderId}"): Expect(None, (415,), on_acme("/orders/{id}")),
    ("POST", ACME + "/orders/{orderId}/finalize"): Expect(None, (415,), on_acme("/orders/{id}/finalize")),
    ("POST", ACME + "/orders/{orderId}/certificate"): Expect(None, (415,), on_acme("/orders/{id}/certificate")),
    ("POST", ACME + "/authorizations/{authorizationId}"): Expect(None, (415,), on_acme("/authorizations/{id}")),
    ("POST", ACME + "/authorizations/{authorizationId}/challenges/{challengeId}"): Expect(
        None, (415,), on_acme("/authorizations/{id}/challenges/{id}")),
    ("POST", ACME + "/revoke-cert"): Expect(None, (415,), on_acme("/revoke-cert")),
    # -- OCSP (public; every answer is an OCSP response with HTTP 200, here malformedRequest) --------
    ("POST", "/api/v1/cert-manager/ocsp/{caId}"): Expect(
        None, (200,), at(lambda w: Call(f"/api/v1/cert-manager/ocsp/{w.issuing_id}", {"not": "ocsp"}))),
    ("GET", "/api/v1/cert-manager/ocsp/{caId}/{ocspRequest}"): Expect(
        None, (200,), at(lambda w: Call(f"/api/v1/cert-manager/ocsp/{w.issuing_id}/AAAA"))),
    # -- batches ---------------------------------------------------------------------------------
    ("POST", BATCHES): Expect("issuer", (202,), at(lambda w: Call(BATCHES, {
        "profileId": w.profile_id, "items": [{"attributes": server_key_attributes("walk-batch.example.test")}]}))),
    ("GET", BATCHES + "/{batchId}"): Expect("viewer", (200,), at(lambda w: Call(f"{BATCHES}/{w.batch_id}"))),
    ("GET", BATCHES + "/{batchId}/items"): Expect(
        "viewer", (200,), at(lambda w: Call(f"{BATCHES}/{w.batch_id}/items")), key=True),
}


def expected_statuses(expect: Expect, caller: str) -> tuple[int, ...]:
    if expect.role is None:
        return expect.ok
    if caller == "anonymous":
        return (401,)
    if caller == "other-project":
        return (404,)  # never 403: that would tell B the id exists
    return expect.ok if RANK[caller] >= RANK[expect.role] else (403,)


# -- the world ------------------------------------------------------------------------------------


async def _project(stack: Stack, http: ApiClient, name: str) -> tuple[str, Caller, ApiClient, str]:
    """A new project (``kms-pki admin bootstrap``), its logged-in admin, and its slug."""
    creds = bootstrap(stack, name)
    admin = http.with_token(await login(http, creds["clientId"], creds["clientSecret"]))
    listed = await admin.get(identities(creds["projectId"]))
    assert listed.status == 200, listed.body
    [identity_id] = [i["identityId"] for i in listed.body["items"] if i["clientId"] == creds["clientId"]]
    return creds["projectId"], Caller(admin.token, identity_id), admin, creds["projectSlug"]


async def _until(fetch: Callable[[], Awaitable[dict[str, Any]]], done: Callable[[dict[str, Any]], bool],
                 timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = await fetch()
        if done(view):
            return view
        assert time.monotonic() < deadline, f"not done in {timeout}s: {view}"


async def _build_world(stack: Stack, api_url: str) -> World:
    async with aiohttp.ClientSession() as session:
        http = ApiClient(session, api_url)
        project_id, admin_caller, admin, project_slug = await _project(stack, http, "walk-a")
        _, other_caller, _, _ = await _project(stack, http, "walk-b")
        callers = {"admin": admin_caller, "other-project": other_caller, "anonymous": Caller(None, None)}
        viewer_credentials: dict[str, str] = {}
        for role in ("issuer", "viewer"):
            r = await admin.post(identities(project_id), {"name": f"walk-{role}", "role": role})
            assert r.status == 201, r.body
            callers[role] = Caller(await login(http, r.body["clientId"], r.body["clientSecret"]),
                                   r.body["identityId"])
            if role == "viewer":
                viewer_credentials = {"clientId": r.body["clientId"], "clientSecret": r.body["clientSecret"]}
        pki = await make_pki(admin, project_id)

        submitted = await admin.post(ISSUE, {"profileId": pki.profile_id,
                                             "attributes": server_key_attributes("walk.example.test")})
        assert submitted.status == 202, submitted.body
        request_id = submitted.body["certificateRequestId"]

        async def request_view() -> dict[str, Any]:
            r = await admin.get(f"{REQUESTS}/{request_id}", params={"wait": "10"})
            assert r.status == 200, r.body
            view: dict[str, Any] = r.body
            return view
        issued = await _until(request_view, lambda v: v["status"] in ("issued", "failed"))
        assert issued["status"] == "issued" and issued["privateKey"], issued

        batch = await admin.post(BATCHES, {"profileId": pki.profile_id, "items": [
            {"attributes": server_key_attributes("walk-batch.example.test")}]})
        assert batch.status == 202, batch.body
        batch_id = batch.body["batchId"]

        async def batch_view() -> dict[str, Any]:
            r = await admin.get(f"{BATCHES}/{batch_id}", params={"wait": "10"})
            assert r.status == 200, r.body
            view: dict[str, Any] = r.body
            return view
        done = await _until(batch_view, lambda v: v["status"] == "completed")
        assert done["issued"] == 1, done
        return World(project_id=project_id, project_slug=project_slug, callers=callers,
                     viewer_credentials=viewer_credentials,
                     root_id=pki.root_id, issuing_id=pki.issuing_id, policy_id=pki.policy_id,
                     profile_id=pki.profile_id, request_id=request_id, certificate_id=issued["certificateId"],
                     batch_id=batch_id)


@pytest.fixture(scope="module")
def world(worker: Stack, api_url: str) -> World:
    # Built once for the module in its own event loop; the tests hold only ids and tokens of it.
    return asyncio.run(_build_world(worker, api_url))


async def writes_by(db: asyncpg.Connection, identity_id: str) -> tuple[int, int, int]:
    """What an identity has written: audit events in its name, certificate requests and batches it made.
    Every write of the API records one of these (the worker's own events are in the name ``worker``)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM audit_events WHERE actor = $1) AS events,"
        " (SELECT count(*) FROM certificate_requests WHERE requested_by = $2::uuid) AS requests,"
        " (SELECT count(*) FROM certificate_batches WHERE requested_by = $2::uuid) AS batches",
        f"identity:{identity_id}", identity_id)
    assert row is not None
    return row["events"], row["requests"], row["batches"]


# -- the tests ------------------------------------------------------------------------------------


def test_every_route_the_app_serves_has_an_expectation() -> None:
    missing = [route for route in ROUTES if route not in EXPECTED]
    assert not missing, f"add these routes to EXPECTED (which role may call each?): {missing}"


def test_every_expectation_names_a_route_the_app_serves() -> None:
    stale = [route for route in EXPECTED if route not in ROUTES]
    assert not stale, f"EXPECTED names routes the app no longer has: {stale}"


def test_the_app_router_serves_exactly_the_routes_of_its_route_tables() -> None:
    """No route reaches the router beside the tables (it would escape this walk and /openapi.json)."""
    app = create_app(Settings(root_key=base64.b64encode(secrets.token_bytes(32)).decode()))
    served = sorted((r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None)
    assert served == sorted(ALL_ROUTES)
    assert [(ep.method, ep.path) for ep in app[ENDPOINTS]] == ALL_ROUTES


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route[0]} {route[1]}")
async def test_route_answers_each_caller_as_its_role_and_project_allow(
    world: World, http: ApiClient, db: asyncpg.Connection, route: Route, caller: str
) -> None:
    expect = EXPECTED.get(route)
    assert expect is not None, f"{route} has no entry in EXPECTED: decide which role may call it"
    call = await expect.build(world, http.with_token(world.callers["admin"].token))
    who = world.callers[caller]
    before = await writes_by(db, who.identity_id) if who.identity_id else None

    r = await http.with_token(who.token).request(route[0], call.path, json_body=call.body, params=call.params)

    wanted = expected_statuses(expect, caller)
    assert r.status in wanted, (caller, route, call.path, r.status, r.body)
    if r.status >= 400:
        assert_problem(r, wanted)
    text = r.body if isinstance(r.body, str) else json.dumps(r.body)
    if caller in KEY_ROLES and expect.key:
        assert PEM_KEY_MARKER in text, (caller, route, "the server-generated key is missing")
    elif caller not in KEY_ROLES:
        assert PEM_KEY_MARKER not in text, (caller, route, "a private key reached a caller who may not read it")
    if r.status >= 400 and who.identity_id:
        assert await writes_by(db, who.identity_id) == before, (caller, route, "a refused call wrote something")
