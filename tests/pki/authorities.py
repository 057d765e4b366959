"""Internal CAs over HTTP, as a client would create them.

Not a test module: the PKI tests share these steps (create and wait until active, fetch the PEM). The
checkers their certificates face (``lint_pkix_cert``, ``openssl verify``) are tests.issuance.checkers'.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from tests.api_client import ApiClient, Reply

CAS = "/api/v1/cert-manager/ca/internal"
POLICIES = "/api/v1/cert-manager/certificate-policies"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
KEY_ALGORITHMS = ("RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1", "ED25519")


def ca_slug(label: str) -> str:
    """A CA name as upstream wants it (a slug) from a test's label: ``"mid one"`` -> ``"mid-one"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def ca_body(project_id: str, name: str, *, parent: str | None = None, key_algorithm: str = "EC_prime256v1",
            ttl: str | None = None, status: str = "active", **configuration: Any) -> dict[str, Any]:
    """Upstream's create body (DESIGN.md 5.3); ``configuration`` adds or overrides configuration fields
    (``maxPathLength=0``, ``notAfter=...``; ``ttl`` is our extension)."""
    config: dict[str, Any] = {
        "type": "intermediate" if parent else "root", "commonName": f"{name} CA", "organization": "Hanzo Test",
        "country": "US", "keyAlgorithm": key_algorithm,
    }
    if "notAfter" not in configuration:
        config["ttl"] = ttl or ("5y" if parent else "10y")
    if parent:
        config["parentCaId"] = parent
    config.update(configuration)
    return {"projectId": project_id, "name": ca_slug(name), "status": status, "configuration": config}


async def wait_until_settled(client: ApiClient, ca_id: str, timeout: float = 90) -> dict[str, Any]:
    """Polls GET .../{caId} until the CA leaves ``pending-certificate`` (the POST answers 202 after 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"{CAS}/{ca_id}")
        assert r.status == 200, r.body
        view: dict[str, Any] = r.body
        if view["status"] != "pending-certificate":
            return view
        # If this fires, look in the stack's worker.log for the task: a worker of another test session
        # that picked the same Redis database number may have taken it (and found no such CA).
        assert time.monotonic() < deadline, f"CA {ca_id} still pending after {timeout}s: no worker created it"
        await asyncio.sleep(0.5)


async def create_ca(client: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a CA and return its view once made (201 at once, or 202 and then polling): active, or
    disabled if the body asked for that."""
    r = await client.post(CAS, body)
    assert r.status in (201, 202), (r.status, r.body)
    view: dict[str, Any] = r.body
    if r.status == 202:
        assert r.headers["Location"].endswith(f"{CAS}/{view['id']}")
        view = await wait_until_settled(client, view["id"])
    assert view["status"] == body.get("status", "active"), view
    return view


async def ca_certificate(client: ApiClient, ca_id: str) -> tuple[str, str]:
    """(certificate PEM, chain PEM) of an active CA."""
    r = await client.get(f"{CAS}/{ca_id}/certificate")
    assert r.status == 200, r.body
    return r.body["certificate"], r.body["certificateChain"]


async def list_cas(client: ApiClient, project_id: str) -> list[dict[str, Any]]:
    r = await client.get(CAS, params={"projectId": project_id})
    assert r.status == 200, r.body
    items: list[dict[str, Any]] = r.body
    return items


def problem_fields(r: Reply) -> set[str]:
    assert r.is_problem(), (r.status, r.body)
    return {e["field"] for e in r.body["errors"]}
