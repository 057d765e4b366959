"""The project and PKI the compatibility tests share, made as an operator makes them. Not a test module.

The project comes from the real ``kms-pki admin bootstrap --project NAME --json`` (DESIGN.md 11), the
one command that names a project's slug (``projectSlug``), which the agent's ``version: v1`` config
needs. No route answers a project's slug for its id (DESIGN.md 5.2 has only ``/projects/slug/{slug}``),
and the ``tenant`` fixture of tests/conftest.py creates its project in-process without one, so this
package makes its own project the documented way instead.

Its PKI goes through the upstream shapes only (DESIGN.md 5.3-5.5), over HTTP: a root CA and an
issuing CA (``configuration{...}``), a policy, an ``enrollmentType: api`` profile and an application
that groups it.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.api_client import ApiClient, Reply, login
from tests.conftest import bootstrap
from tests.stack import Stack

CA = "/api/v1/cert-manager/ca/internal"
POLICIES = "/api/v1/cert-manager/certificate-policies"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
APPLICATIONS = "/api/v1/cert-manager/applications"
CERTIFICATES = "/api/v1/cert-manager/certificates"
REQUESTS = CERTIFICATES + "/certificate-requests"

# Every name the clients ask for is under this domain.
DOMAIN = "compat.example.test"

# ``validity.max`` in upstream's grammar, where ``m`` is months of 30 days (DESIGN.md 5.1): six months
# lets cert-manager's default duration (2160h, 90 days) through; read as minutes it would refuse all.
POLICY: dict[str, Any] = {
    "description": "What the KMS agent and the cert-manager issuer ask for",
    "subject": [{"type": "common_name", "allowed": [f"*.{DOMAIN}"]}],
    "sans": [{"type": "dns_name", "allowed": [f"*.{DOMAIN}"]}],
    "keyUsages": {"allowed": ["digital_signature", "key_encipherment"]},
    "extendedKeyUsages": {"allowed": ["server_auth", "client_auth"]},
    "algorithms": {"signature": ["ECDSA-SHA256", "RSA-SHA256"], "keyAlgorithm": ["EC_prime256v1", "RSA_2048"]},
    "validity": {"max": "6m"},
}


@dataclass(frozen=True)
class Project:
    """What ``kms-pki admin bootstrap --json`` printed (``slug`` is None if it printed none)."""

    id: str
    name: str
    slug: str | None
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class CompatPki:
    project: Project
    root_id: str
    issuing_id: str
    root_pem: str
    issuing_pem: str
    policy_id: str
    profile_id: str
    profile_slug: str
    application_id: str
    application_name: str


def bootstrap_project(stack: Stack) -> Project:
    """A new project and its admin identity, by ``kms-pki admin bootstrap --json`` as an operator runs it."""
    name = f"Compat {secrets.token_hex(3)}"
    printed = bootstrap(stack, name)
    return Project(printed["projectId"], name, printed.get("projectSlug"), printed["clientId"],
                   printed["clientSecret"])


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _active_ca(admin: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a CA (waiting with the ``?wait`` extension) and read it until its key and certificate exist."""
    r = await admin.post(CA, body, params={"wait": "30"})
    assert r.status in (200, 201, 202), (r.status, r.body)
    ca: dict[str, Any] = r.body
    deadline = asyncio.get_running_loop().time() + 60
    while ca["status"] != "active":
        assert ca["status"] == "pending-certificate", ca
        assert asyncio.get_running_loop().time() < deadline, ca
        await asyncio.sleep(0.2)
        got = await admin.get(f"{CA}/{ca['id']}")
        assert got.status == 200, got.body
        ca = got.body
    return ca


def _created(r: Reply, wrapper: str) -> dict[str, Any]:
    assert r.status in (200, 201), (r.status, r.body)
    resource: dict[str, Any] = r.body[wrapper]
    return resource


async def _ca_certificate(admin: ApiClient, ca_id: str) -> str:
    r = await admin.get(f"{CA}/{ca_id}/certificate")
    assert r.status == 200, r.body
    pem: str = r.body["certificate"]
    return pem


async def make_pki(api_url: str, project: Project) -> CompatPki:
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as session:
        http = ApiClient(session, api_url)
        admin = http.with_token(await login(http, project.client_id, project.client_secret))
        root = await _active_ca(admin, {
            "projectId": project.id, "name": "compat-root", "status": "active",
            "configuration": {"type": "root", "commonName": "Compat Test Root", "organization": "Hanzo Compat",
                              "country": "US", "keyAlgorithm": "EC_prime256v1", "maxPathLength": -1,
                              "notAfter": _utc(now + timedelta(days=5 * 365))}})
        issuing = await _active_ca(admin, {
            "projectId": project.id, "name": "compat-issuing", "status": "active",
            "configuration": {"type": "intermediate", "parentCaId": root["id"], "commonName": "Compat Issuing CA",
                              "organization": "Hanzo Compat", "country": "US", "keyAlgorithm": "EC_prime256v1",
                              "maxPathLength": 0, "notAfter": _utc(now + timedelta(days=2 * 365))}})
        policy = _created(await admin.post(POLICIES, {"projectId": project.id, "name": "compat-policy",
                                                            **POLICY}), "certificatePolicy")
        profile = _created(await admin.post(PROFILES, {
            "projectId": project.id, "slug": "compat-web", "description": "TLS servers of the compat tests",
            "caId": issuing["id"], "certificatePolicyId": policy["id"], "issuerType": "ca", "enrollmentType": "api",
            "apiConfig": {"autoRenew": False, "renewBeforeDays": 7},
            "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1", "signatureAlgorithm": "ECDSA-SHA256",
                         "keyUsages": ["digital_signature", "key_encipherment"],
                         "extendedKeyUsages": ["server_auth"]}}), "certificateProfile")
        application = _created(await admin.post(APPLICATIONS, {
            "projectId": project.id, "name": "compat-app", "description": "The services the agent serves",
            "profileIds": [profile["id"]]}), "application")
        root_pem = await _ca_certificate(admin, root["id"])
        issuing_pem = await _ca_certificate(admin, issuing["id"])
    return CompatPki(project, root["id"], issuing["id"], root_pem, issuing_pem, policy["id"], profile["id"],
                     profile["slug"], application["id"], application["name"])
