"""A whole world for the external-CA tests: the service's stack (API, worker, beat) and its upstream peers
(pebble and bind9, tests.external.upstream), plus the project side made over the HTTP API (an ACME CA, a
policy for the test zone, a profile). Not a test module; nothing here is a stand-in."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.api_client import ApiClient
from tests.external.upstream import ZONE, Bind9, Pebble
from tests.pki_setup import ISSUE, POLICIES, PROFILES, REQUESTS
from tests.stack import Stack

ACME_CA = "/api/v1/cert-manager/ca/acme"
# Settings for the external path in tests: a short dns-01 wait, quick retries, a short poll per attempt.
EXTERNAL_TIMINGS = {
    "KMS_EXTERNAL_DNS_PROPAGATION_SECONDS": "0.2",
    "KMS_EXTERNAL_BACKOFF_BASE_SECONDS": "0.5",
    "KMS_EXTERNAL_BACKOFF_MAX_SECONDS": "4",
    "KMS_EXTERNAL_HTTP_TIMEOUT_SECONDS": "5",
    "KMS_EXTERNAL_POLL_SECONDS": "20",
}
ZONE_POLICY: dict[str, Any] = {
    "subject": [{"type": "common_name", "allowed": [f"*.{ZONE}"]}],
    "sans": [{"type": "dns_name", "allowed": [f"*.{ZONE}"], "denied": [f"forbidden.{ZONE}"]}],
    "keyUsages": {"allowed": ["digital_signature", "key_encipherment"]},
    "extendedKeyUsages": {"allowed": ["server_auth", "client_auth"]},
    "validity": {"max": "90d"},
}


@dataclass
class Upstream:
    dns: Bind9
    pebble: Pebble

    def stop(self) -> None:
        self.pebble.stop()
        self.dns.stop()


def start_upstream(directory: Path, api_port: int, pebble_env: dict[str, str] | None = None) -> Upstream:
    dns = Bind9(directory)
    dns.start()
    pebble = Pebble(directory, dns=dns, http_port=api_port, env=pebble_env)
    try:
        pebble.start()
    except Exception:
        dns.stop()
        raise
    return Upstream(dns, pebble)


def api_port(stack: Stack) -> int:
    return int(stack.api_url.rsplit(":", 1)[1])


@dataclass
class AcmePki:
    ca_id: str
    policy_id: str
    profile_id: str
    ca: dict[str, Any] = field(default_factory=dict)


async def make_acme_pki(admin: ApiClient, project_id: str, upstream: Upstream, *, slug: str = "ext",
                        dns01: bool = True, auto_renew: dict[str, Any] | None = None) -> AcmePki:
    """An ACME CA on pebble (dns-01 through bind9 when ``dns01``, else http-01), a policy for the test zone
    and a profile, all through the public API; waits for the CA's account."""
    configuration: dict[str, Any] = {"directoryUrl": upstream.pebble.directory_url,
                                     "accountEmail": f"pki-{slug}@{ZONE}", "caBundle": upstream.pebble.tls_ca_pem}
    if dns01:
        configuration["dnsProviderConfig"] = upstream.dns.provider_config()
    ca = await admin.post(ACME_CA + "?wait=30", {"projectId": project_id, "name": f"{slug}-acme", "status": "active",
                                                 "configuration": configuration})
    assert ca.status == 201, ca.body
    assert ca.body["status"] == "active", ca.body
    pol = await admin.post(POLICIES, {"projectId": project_id, "name": f"{slug}-policy", **ZONE_POLICY})
    assert pol.status == 201, pol.body
    policy_id = pol.body["certificatePolicy"]["id"]
    prof = await admin.post(PROFILES, {
        "projectId": project_id, "slug": slug, "issuerType": "ca", "caId": ca.body["id"],
        "certificatePolicyId": policy_id, "enrollmentType": "api",
        "apiConfig": auto_renew or {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1", "extendedKeyUsages": ["server_auth"]}})
    assert prof.status == 201, prof.body
    return AcmePki(ca.body["id"], policy_id, prof.body["certificateProfile"]["id"], ca.body)


def server_key_body(profile_id: str, name: str) -> dict[str, Any]:
    return {"profileId": profile_id,
            "attributes": {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}}


async def submit(client: ApiClient, body: dict[str, Any], wait: int = 0) -> dict[str, Any]:
    r = await client.post(ISSUE + (f"?wait={wait}" if wait else ""), body)
    assert r.status in (200, 202), r.body
    answer: dict[str, Any] = r.body
    return answer


async def final(client: ApiClient, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request once issued or failed (long-polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"{REQUESTS}/{request_id}?wait=10")
        assert r.status == 200, r.body
        if r.body["status"] in ("issued", "failed"):
            view: dict[str, Any] = r.body
            return view
    raise AssertionError(f"request {request_id} not final after {timeout}s")


async def stored_orders(database_url: str, ca_id: str) -> list[tuple[str, str | None]]:
    """(request id, order URL) of every upstream order the service recorded for a CA."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT request_id::text, order_url FROM external_orders WHERE ca_id = $1::uuid",
                                ca_id)
    finally:
        await conn.close()
    return [(r[0], r[1]) for r in rows]


def pebble_new_orders(pebble: Pebble) -> int:
    """Orders pebble itself saw placed (its own log: one POST to its new-order endpoint each)."""
    return len(pebble.requests_logged("POST /order-plz"))


async def until(predicate: Any, timeout: float = 30, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
