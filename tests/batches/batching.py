"""Bulk batches over HTTP as a client drives them: build items (valid and hostile), submit, long-poll
until completed, read the items back page by page or as one NDJSON stream, and ask the database what
was written. Not a test module.

Each test package stands alone: the few CSR helpers below are rebuilt here, not imported from
``tests/issuance``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.api_client import ApiClient, Reply
from tests.issuance.csrs import make_csr, pem_of

BATCHES = "/api/v1/cert-manager/certificate-batches"
NDJSON = "application/x-ndjson"
Item = dict[str, Any]


def name_of(index: int) -> str:
    """The DNS name item ``index`` asks for, so a certificate can be traced back to its item."""
    return f"item-{index}.example.test"


def csr_item(index: int) -> Item:
    """A valid item whose key the client keeps."""
    return {"csr": make_csr(cn=name_of(index))}


def server_key_item(index: int) -> Item:
    """A valid item without a CSR: the worker generates the key (the profile's default, EC P-256)."""
    name = name_of(index)
    return {"attributes": {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}}


def valid_item(index: int) -> Item:
    """Even indexes bring a CSR, odd ones let the server make the key."""
    return csr_item(index) if index % 2 == 0 else server_key_item(index)


# -- hostile items ---------------------------------------------------------------------------------


def _csr_with_bad_signature(index: int) -> str:
    der = bytearray(x509.load_pem_x509_csr(make_csr(cn=name_of(index)).encode()).public_bytes(
        serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature BIT STRING is the last field of a CSR
    return pem_of(bytes(der))


@cache
def _rsa_1024_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point


def _attributes(index: int, **extra: Any) -> Item:
    return {"attributes": {**server_key_item(index)["attributes"], **extra}}


# kind -> (make the item for an index, words its errorMessage must contain). Every one of these is wrong
# in a way a client could plausibly get wrong, and each names a different reason.
HOSTILE: dict[str, tuple[Callable[[int], Item], tuple[str, ...]]] = {
    "common-name-outside-policy": (
        lambda i: {"attributes": {"commonName": f"item-{i}.elsewhere.test",
                                  "altNames": [{"type": "dns_name", "value": f"item-{i}.example.test"}]}},
        ("commonName", "elsewhere.test")),
    "garbage-csr": (lambda i: {"csr": f"hello, I am certificate request {i}"}, ("csr", "PEM")),
    "csr-with-bad-signature": (lambda i: {"csr": _csr_with_bad_signature(i)}, ("signature does not verify",)),
    "rsa-1024-csr": (lambda i: {"csr": make_csr(_rsa_1024_key(), cn=name_of(i))}, ("1024",)),
    "wrong-type-in-attributes": (lambda i: _attributes(i, commonName=i), ("attributes.commonName", "string")),
    "alt-names-not-a-list": (lambda i: _attributes(i, altNames=name_of(i)), ("attributes.altNames", "list")),
    "ttl-over-policy-max": (lambda i: _attributes(i, ttl="365d"), ("ttl", "90d")),
    "san-type-without-rule": (
        lambda i: _attributes(i, altNames=[{"type": "dns_name", "value": name_of(i)},
                                           {"type": "email", "value": f"ops-{i}@example.test"}]),
        ("email",)),
    "attributes-not-an-object": (lambda i: {"attributes": f"CN={name_of(i)}"}, ("attributes", "dictionary")),
    "unknown-key-algorithm": (lambda i: _attributes(i, keyAlgorithm="RSA_1024"), ("attributes.keyAlgorithm",)),
    "csr-not-a-string": (lambda i: {"csr": i}, ("csr", "string")),
    "item-profile-id-not-a-uuid": (lambda i: {**server_key_item(i), "profileId": "web"}, ("profileId", "UUID")),
}


def with_unknown_fields(item: Item) -> Item:
    """The item as a newer client sends it, with fields this version does not know: they are ignored
    (DESIGN.md 5.1), so the item is as valid as it was."""
    extended: Item = {**item, "comment": "please"}
    if "attributes" in item:
        extended["attributes"] = {**item["attributes"], "favouriteColour": "blue"}
    return extended


def hostile_item(kind: str, index: int) -> Item:
    return HOSTILE[kind][0](index)


def reason_words(kind: str) -> tuple[str, ...]:
    return HOSTILE[kind][1]


# -- the API ---------------------------------------------------------------------------------------


async def submit(client: ApiClient, profile_id: str, items: list[Any]) -> Reply:
    return await client.post(BATCHES, {"profileId": profile_id, "items": items})


async def wait_completed(client: ApiClient, batch_id: str, timeout: float) -> dict[str, Any]:
    """The batch's counters once it is completed, long-polling with ``?wait=30`` as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"{BATCHES}/{batch_id}", params={"wait": "30"})
        assert r.status == 200, (r.status, r.body)
        view: dict[str, Any] = r.body
        if view["status"] == "completed":
            assert "Retry-After" not in r.headers
            return view
        assert r.headers["Retry-After"], r.headers
        if time.monotonic() > deadline:
            raise AssertionError(f"batch not completed in {timeout}s: {view}")


async def item_pages(client: ApiClient, batch_id: str, *, status: str | None = None, limit: int = 1000
                     ) -> list[list[Item]]:
    """Every page of ``.../items``, following ``nextCursor`` until there is none."""
    pages: list[list[Item]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        r = await client.get(f"{BATCHES}/{batch_id}/items", params=params)
        assert r.status == 200, (r.status, r.body)
        assert len(r.body["items"]) <= limit
        pages.append(r.body["items"])
        cursor = r.body["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 10_001, "the cursor never ends"


async def all_items(client: ApiClient, batch_id: str, **kw: Any) -> list[Item]:
    return [item for page in await item_pages(client, batch_id, **kw) for item in page]


async def streamed_items(client: ApiClient, batch_id: str) -> list[Item]:
    """``.../items`` with ``Accept: application/x-ndjson``: one JSON object a line, read as it arrives."""
    headers = {"Accept": NDJSON, "Authorization": f"Bearer {client.token}"}
    out = []
    async with client.session.get(f"{client.base}{BATCHES}/{batch_id}/items", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == NDJSON
        async for line in resp.content:
            if line.strip():
                out.append(json.loads(line))
    return out


def by_status(items: list[Item]) -> Counter[str]:
    return Counter(item["status"] for item in items)


# -- what the database says ------------------------------------------------------------------------


async def certificates_of_batch(db: asyncpg.Connection, batch_id: str) -> tuple[int, int, int]:
    """(certificates, distinct requests they belong to, certificates of requests not issued) of a batch."""
    row = await db.fetchrow(
        "SELECT count(c.id) AS certificates, count(DISTINCT c.request_id) AS requests,"
        " count(c.id) FILTER (WHERE r.status <> 'issued' OR r.certificate_id <> c.id) AS stray"
        " FROM certificate_requests r JOIN certificates c ON c.request_id = r.id WHERE r.batch_id = $1::uuid",
        batch_id)
    return row["certificates"], row["requests"], row["stray"]


async def rows_written(db: asyncpg.Connection) -> dict[str, int]:
    """How many batches, certificate requests and certificates the whole database holds."""
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("certificate_batches", "certificate_requests", "certificates")}
