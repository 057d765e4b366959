"""Issuance over HTTP as a client does it: submit, wait for the outcome, read what the service stored.
Not a test module."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from tests.api_client import ApiClient, Reply, Tenant
from tests.pki_setup import ISSUE, REQUESTS

CERTIFICATES = ISSUE
# The type of the ``make_tenant`` fixture (tests/conftest.py).
MakeTenant = Callable[[str], Awaitable[Tenant]]


def server_key_attributes(name: str, key_algorithm: str | None = None, **extra: Any) -> dict[str, Any]:
    """Attributes for a certificate whose key the server generates: CN and one DNS SAN, both ``name``."""
    attributes: dict[str, Any] = {"commonName": name, "altNames": [{"type": "dns_name", "value": name}], **extra}
    if key_algorithm is not None:
        attributes["keyAlgorithm"] = key_algorithm
    return attributes


async def submit(client: ApiClient, profile_id: str, *, csr: str | None = None,
                 attributes: dict[str, Any] | None = None, wait: int | None = None,
                 idempotency_key: str | None = None) -> Reply:
    body: dict[str, Any] = {"profileId": profile_id}
    if csr is not None:
        body["csr"] = csr
    if attributes is not None:
        body["attributes"] = attributes
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    params = {"wait": str(wait)} if wait is not None else None
    return await client.post(ISSUE, body, headers=headers, params=params)


async def outcome(client: ApiClient, request_id: str, timeout: float = 30) -> dict[str, Any]:
    """The request once it is issued or failed (long-polls with ?wait=10)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"{REQUESTS}/{request_id}", params={"wait": "10"})
        assert r.status == 200, (r.status, r.body)
        if r.body["status"] in ("issued", "failed") or time.monotonic() > deadline:
            view: dict[str, Any] = r.body
            return view


def answered_issued(r: Reply) -> bool:
    """Whether a POST /certificates (or /renew) answer carries the issued certificate: 200 and, for the
    issue answer, ``certificate`` an object (the renew answer is flat: ``certificateId`` set)."""
    body = r.body
    return r.status == 200 and body["status"] == "issued" and (
        isinstance(body.get("certificate"), dict) or bool(body.get("certificateId")))


def request_id_of(r: Reply) -> str:
    request_id: str = r.body["certificateRequestId"]
    return request_id


async def view_of(client: ApiClient, r: Reply, timeout: float = 30) -> dict[str, Any]:
    """The flat request view (``GET /certificate-requests/{id}``) behind a POST answer, once final."""
    assert r.status in (200, 202), (r.status, r.body)
    return await outcome(client, request_id_of(r), timeout)


async def issued(client: ApiClient, profile_id: str, **kw: Any) -> dict[str, Any]:
    """Submit with ?wait=10 and return the issued request view (asserting it was issued)."""
    r = await submit(client, profile_id, wait=10, **kw)
    view = await view_of(client, r)
    assert view["status"] == "issued", view
    return view


async def certificates_of_request(db: asyncpg.Connection, request_id: str) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM certificates WHERE request_id = $1::uuid", request_id)
    return n


async def rows_of_project(db: asyncpg.Connection, project_id: str) -> dict[str, int]:
    """How many certificate requests and certificates a project has."""
    return {table: await db.fetchval(f"SELECT count(*) FROM {table} WHERE project_id = $1::uuid", project_id)
            for table in ("certificate_requests", "certificates")}
