"""What the invariant observers share: a project populated through every signing path of the HTTP API,
and readers of what the service really stored and signed. Not a test module.

The observers judge what the service *issued*: they parse the certificates it stored and answered and
compare them with the rows and audit events it wrote, never trusting one column to vouch for another.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
from cryptography import x509

from tests.api_client import ApiClient, open_tenant
from tests.batches import batching
from tests.issuance.csrs import make_csr
from tests.issuance.issuing import issued, outcome, server_key_attributes
from tests.pki.authorities import PROFILES
from tests.pki_setup import ISSUE, Pki, make_pki
from tests.stack import Stack

# The ways the service signs something, as a client reaches each one over the HTTP API.
SINGLE_CSR = "single request with a CSR"
SINGLE_SERVER_KEY = "single request with a server key"
BATCH = "batch"
RENEWAL = "renewal"
ROOT_CA = "root CA creation"
INTERMEDIATE_CA = "intermediate CA creation"
SELF_SIGNED = "self-signed profile"
PATHS = (SINGLE_CSR, SINGLE_SERVER_KEY, BATCH, RENEWAL, ROOT_CA, INTERMEDIATE_CA, SELF_SIGNED)


@dataclass(frozen=True)
class Answered:
    """Something the service signed, as the API answered it: a certificate or a CA, and its serial (hex)."""

    kind: str  # "certificate" or "ca"
    id: str
    serial: str


@dataclass
class Population:
    project_id: str
    by_path: dict[str, list[Answered]] = field(default_factory=dict)


async def self_signed_profile(admin: ApiClient, pki: Pki, slug: str = "self", key_algorithm: str = "EC_prime256v1"
                              ) -> str:
    """A self-signed profile under ``pki``'s policy: the worker signs each certificate with its own key."""
    r = await admin.post(PROFILES, {
        "projectId": pki.project_id, "slug": slug, "issuerType": "self-signed", "certificatePolicyId": pki.policy_id,
        "enrollmentType": "api", "apiConfig": {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": key_algorithm, "extendedKeyUsages": ["server_auth"]}})
    assert r.status == 201, r.body
    profile_id: str = r.body["certificateProfile"]["id"]
    return profile_id


async def renewed(client: ApiClient, certificate_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``POST /certificates/{id}/renew?wait=10``, then polling, until the renewal is issued."""
    r = await client.post(f"{ISSUE}/{certificate_id}/renew", body or {}, params={"wait": "10"})
    assert r.status in (200, 202), (r.status, r.body)
    view: dict[str, Any] = r.body if r.body["status"] == "issued" else await outcome(
        client, r.body["certificateRequestId"])
    assert view["status"] == "issued", view
    return view


async def issued_batch(client: ApiClient, profile_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit a batch, wait until it completes, and return its items (asserting each was issued)."""
    r = await batching.submit(client, profile_id, items)
    assert r.status == 202, (r.status, r.body)
    await batching.wait_completed(client, r.body["batchId"], timeout=60)
    out = await batching.all_items(client, r.body["batchId"])
    assert [item["status"] for item in out] == ["issued"] * len(items), out
    return out


def _certificate(view: dict[str, Any]) -> Answered:
    return Answered("certificate", str(view["certificateId"]), view["serialNumber"])


async def populate(stack: Stack, name: str = "observed") -> Population:
    """One project signed into through every path of ``PATHS``, recording what the API answered for each."""
    async with aiohttp.ClientSession() as session:
        tenant = await open_tenant(stack, session, name)
        admin = tenant.admin
        pki = await make_pki(admin, tenant.project_id)
        found = Population(tenant.project_id)
        for path, ca_id in ((ROOT_CA, pki.root_id), (INTERMEDIATE_CA, pki.issuing_id)):
            ca = (await admin.get(f"/api/v1/cert-manager/ca/internal/{ca_id}")).body
            found.by_path[path] = [Answered("ca", ca_id, ca["configuration"]["serialNumber"])]

        csr_view = await issued(admin, pki.profile_id, csr=make_csr(cn="csr.example.test"))
        found.by_path[SINGLE_CSR] = [_certificate(csr_view)]
        key_view = await issued(admin, pki.profile_id, attributes=server_key_attributes("key.example.test"))
        found.by_path[SINGLE_SERVER_KEY] = [_certificate(key_view)]
        found.by_path[RENEWAL] = [_certificate(await renewed(admin, key_view["certificateId"]))]
        items = await issued_batch(admin, pki.profile_id, [batching.valid_item(i) for i in range(8)])
        found.by_path[BATCH] = [_certificate(item) for item in items]
        self_signed = await self_signed_profile(admin, pki)
        views = [await issued(admin, self_signed, attributes=server_key_attributes(f"self-{i}.example.test"))
                 for i in range(2)]
        found.by_path[SELF_SIGNED] = [_certificate(v) for v in views]
    return found


# -- what the database holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A certificate the service stored (a leaf, or a CA's own), parsed from its stored PEM."""

    kind: str  # "certificate" or "ca"
    id: str
    stored_serial: str
    certificate: x509.Certificate
    ca_id: str | None  # the issuing CA a leaf row names, or a CA's parent; None when self-signed


async def signed_in_project(db: asyncpg.Connection, project_id: str) -> list[Signed]:
    """Every certificate of the project, leaves and CAs alike, as stored."""
    rows = await db.fetch(
        "SELECT 'certificate' AS kind, id, serial_number, certificate_pem, ca_id FROM certificates"
        " WHERE project_id = $1"
        " UNION ALL SELECT 'ca', id, serial_number, certificate_pem, parent_ca_id FROM certificate_authorities"
        " WHERE project_id = $1 AND certificate_pem IS NOT NULL", UUID(project_id))
    return [Signed(r["kind"], str(r["id"]), r["serial_number"], x509.load_pem_x509_certificate(
        r["certificate_pem"].encode()), str(r["ca_id"]) if r["ca_id"] else None) for r in rows]


@dataclass(frozen=True)
class AuditEvent:
    subject_type: str
    subject_id: str
    details: dict[str, Any]


async def signing_events(db: asyncpg.Connection, project_id: str) -> list[AuditEvent]:
    """The project's ``certificate.sign`` audit events (DESIGN.md 4.5): one per signature."""
    rows = await db.fetch("SELECT subject_type, subject_id, details FROM audit_events"
                          " WHERE project_id = $1 AND action = 'certificate.sign' ORDER BY id", UUID(project_id))
    # A plain asyncpg connection has no jsonb codec: the details arrive as JSON text.
    return [AuditEvent(r["subject_type"], r["subject_id"], json.loads(r["details"])) for r in rows]


def event_serial(event: AuditEvent) -> int | None:
    """The serial an audit event carries, as a number (None if it carries none, or not a hex one)."""
    value = event.details.get("serial")
    try:
        return int(value, 16) if isinstance(value, str) else None
    except ValueError:
        return None


# -- checkers --------------------------------------------------------------------------------------


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous (module- or package-scoped) fixture."""
    return asyncio.run(coro)
