"""Waiting for a certificate: ``?wait=N`` on submit and on the request (a long poll woken by NOTIFY),
202 + Location + Retry-After without it, and the newest-first, cursor-paginated list of requests."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

import asyncpg
import pytest

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import outcome, rows_of_project, server_key_attributes, submit
from tests.pki_setup import ISSUE, REQUESTS, make_pki
from tests.stack import Stack

# The flat GET view of a request (DESIGN.md 5.6): upstream's fields, plus the extensions
# certificateRequestId, certificateChain and issuingCaCertificate.
VIEW_KEYS = {"certificateRequestId", "profileId", "status", "certificate", "certificateChain", "issuingCaCertificate",
             "serialNumber", "certificateId", "privateKey", "errorMessage", "commonName", "organization",
             "organizationalUnit", "country", "state", "locality", "altNames", "keyUsages", "extendedKeyUsages",
             "keyAlgorithm", "signatureAlgorithm", "ttl", "basicConstraints", "createdAt", "updatedAt"}
# The answer of POST /certificates: the certificate (an object, or null until issued) and the request.
ANSWER_KEYS = {"certificate", "certificateRequestId", "status", "message"}
CERTIFICATE_KEYS = {"certificate", "issuingCaCertificate", "certificateChain", "privateKey", "serialNumber",
                    "certificateId"}
ITEM_KEYS = {"id", "certificateRequestId", "status", "commonName", "altNames", "profileId", "profileName", "caId",
             "certificateId", "errorMessage", "createdAt", "updatedAt", "certificate"}


async def test_submit_with_wait_answers_200_with_the_certificate_object_in_the_first_response(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("a.example.test"), wait=10)

    assert r.status == 200, r.body
    assert set(r.body) == ANSWER_KEYS and set(r.body["certificate"]) == CERTIFICATE_KEYS
    assert r.body["status"] == "issued" and r.body["message"] is None
    issued = r.body["certificate"]
    assert issued["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert issued["serialNumber"] and issued["certificateId"] and issued["certificateChain"] and issued["privateKey"]
    assert r.headers["Location"] == f"{tenant.admin.base}{REQUESTS}/{r.body['certificateRequestId']}"
    assert "Retry-After" not in r.headers  # final: nothing to come back for


async def test_submit_without_wait_answers_202_pending_and_polling_the_location_gets_the_same_shape(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("b.example.test"))

    assert r.status == 202, r.body
    assert r.body["status"] == "pending" and r.body["certificate"] is None
    request_id = r.body["certificateRequestId"]
    assert r.headers["Location"] == f"{tenant.admin.base}{REQUESTS}/{request_id}"
    assert int(r.headers["Retry-After"]) >= 1
    polled = await poll_until_final(tenant.admin, f"{REQUESTS}/{request_id}")
    waited = await tenant.admin.get(f"{REQUESTS}/{request_id}", params={"wait": "10"})
    assert waited.status == 200 and "Retry-After" not in waited.headers
    assert polled["status"] == "issued" and polled["certificate"]
    assert waited.body == polled
    assert set(r.body) == ANSWER_KEYS and set(polled) == set(waited.body) == VIEW_KEYS
    assert polled["commonName"] == "b.example.test" and polled["profileId"] == pki.profile_id


async def poll_until_final(client: ApiClient, path: str, timeout: float = 20) -> dict[str, object]:
    """Plain GETs, as a client without long-poll support makes them; every pending answer carries Retry-After."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(path)
        assert r.status == 200, r.body
        if r.body["status"] in ("issued", "failed"):
            assert "Retry-After" not in r.headers
            return dict(r.body)
        assert time.monotonic() < deadline, r.body
        assert int(r.headers["Retry-After"]) >= 1
        await asyncio.sleep(0.1)  # faster than Retry-After asks: this is a test


@pytest.mark.parametrize("wait", ["31", "-1", "abc", "1.5", ""])
async def test_wait_that_is_not_an_integer_from_0_to_30_is_a_422_problem_and_submits_nothing(
    wait: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    issued = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("c.example.test"),
                          wait=10)
    before = await rows_of_project(db, tenant.project_id)

    posted = await tenant.admin.post(ISSUE, {"profileId": pki.profile_id,
                                             "attributes": server_key_attributes("d.example.test")},
                                     params={"wait": wait})
    got = await tenant.admin.get(f"{REQUESTS}/{issued.body['certificateRequestId']}", params={"wait": wait})

    for r in (posted, got):
        assert r.status == 422 and r.is_problem(), (r.status, r.body)
        assert r.body["error"] == "ValidationFailure", r.body
        assert [e["field"] for e in r.body["errors"]] == ["wait"]
    assert await rows_of_project(db, tenant.project_id) == before


async def test_long_poll_wakes_on_the_workers_notify_not_at_the_end_of_the_wait(
    worker: Stack, tenant: Tenant, api_without_broker: str, ring_doorbell: Callable[[str], Awaitable[None]]
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    # Submitted where no worker hears of it: the request waits, pending, until the doorbell rings.
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    r = await submit(deaf, pki.profile_id, attributes=server_key_attributes("e.example.test"))
    assert r.status == 202, r.body
    request_id = r.body["certificateRequestId"]

    long_poll = asyncio.create_task(tenant.admin.get(f"{REQUESTS}/{request_id}", params={"wait": "10"}))
    await asyncio.sleep(1.0)
    assert not long_poll.done()  # nothing to report yet: the GET is waiting
    rung = time.monotonic()
    await ring_doorbell(request_id)
    answer = await asyncio.wait_for(long_poll, 15)
    elapsed = time.monotonic() - rung

    assert answer.status == 200 and answer.body["status"] == "issued", answer.body
    # Without the NOTIFY it would answer after the full 10 s; signing takes a fraction of a second.
    assert elapsed < 3, elapsed


async def test_long_poll_that_runs_out_answers_the_pending_request_with_retry_after(
    worker: Stack, tenant: Tenant, api_without_broker: str
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    r = await submit(deaf, pki.profile_id, attributes=server_key_attributes("f.example.test"))
    request_id = r.body["certificateRequestId"]

    started = time.monotonic()
    answer = await tenant.admin.get(f"{REQUESTS}/{request_id}", params={"wait": "1"})
    elapsed = time.monotonic() - started

    assert answer.status == 200 and answer.body["status"] == "pending", answer.body
    assert int(answer.headers["Retry-After"]) >= 1
    assert 0.9 <= elapsed < 3, elapsed


# -- the list ---------------------------------------------------------------------------------------


def newest_first(views: list[dict[str, object]]) -> list[str]:
    """Request ids in the list's documented order: createdAt descending, then id descending."""
    ordered = sorted(views, key=lambda v: (datetime.fromisoformat(str(v["createdAt"])),
                                           UUID(str(v["certificateRequestId"]))), reverse=True)
    return [str(v["certificateRequestId"]) for v in ordered]


async def all_pages(client: ApiClient, params: dict[str, str]) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        r = await client.get(REQUESTS, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status == 200, r.body
        pages.append([item["id"] for item in r.body["certificateRequests"]])
        cursor = r.body["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, pages


async def test_list_pages_newest_first_without_duplicates_or_gaps(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    sent = [await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes(f"s{i}.example.test"))
            for i in range(3)]
    # Concurrent submissions may share a createdAt: the id breaks the tie, and no page may lose them.
    sent += await asyncio.gather(*(submit(tenant.admin, pki.profile_id,
                                          attributes=server_key_attributes(f"c{i}.example.test"))
                                   for i in range(4)))
    assert all(r.status == 202 for r in sent)
    views = [await outcome(tenant.admin, r.body["certificateRequestId"]) for r in sent]
    expected = newest_first(views)
    assert expected[-3:] == [r.body["certificateRequestId"] for r in reversed(sent[:3])]

    pages = await all_pages(tenant.admin, {"projectId": tenant.project_id, "limit": "3"})

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == expected
    whole = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "limit": "100"})
    assert [item["id"] for item in whole.body["certificateRequests"]] == expected
    assert whole.body["nextCursor"] is None and whole.body["totalCount"] == 7


async def test_list_filters_by_status_across_pages(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    issued = [await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes(f"i{i}.example.test"),
                           wait=10) for i in range(3)]
    assert all(r.status == 200 for r in issued)

    pages = await all_pages(tenant.admin, {"projectId": tenant.project_id, "status": "issued", "limit": "2"})
    failed = await all_pages(tenant.admin, {"projectId": tenant.project_id, "status": "failed", "limit": "2"})

    assert [i for page in pages for i in page] == [r.body["certificateRequestId"] for r in reversed(issued)]
    assert failed == [[]]


async def test_listed_issued_requests_link_to_their_certificates(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    issued = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("l.example.test"), wait=10)
    assert issued.status == 200, issued.body
    certificate = issued.body["certificate"]

    listed = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id})

    (item,) = listed.body["certificateRequests"]
    assert set(item) == ITEM_KEYS and listed.body["totalCount"] == 1
    assert item["status"] == "issued" and item["certificateId"] == certificate["certificateId"]
    assert item["certificate"] == {"id": certificate["certificateId"], "serialNumber": certificate["serialNumber"],
                                   "status": "active"}
    assert item["commonName"] == "l.example.test" and item["profileId"] == pki.profile_id
    assert "privateKey" not in item  # the list never carries keys
    meta = await tenant.admin.get(f"{ISSUE}/{item['certificateId']}")
    assert meta.status == 200 and meta.body["certificate"]["certificateRequestId"] == item["id"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(("name", "value", "status"), [
    ("cursor", "not a cursor", 400),
    ("cursor", "%%%", 400),
    ("cursor", _b64("no separator"), 400),
    ("cursor", _b64("2025-01-01T00:00:00+00:00|not-a-uuid"), 400),
    ("cursor", _b64("yesterday|00000000-0000-0000-0000-000000000000"), 400),
    ("cursor", _b64("a|b|c"), 400),
    ("cursor", base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(), 400),
    # A limit or status outside the schema fails the schema (422); a cursor the API never gives out is a
    # bad request (400).
    ("limit", "0", 422),
    ("limit", "101", 422),
    ("limit", "ten", 422),
    ("status", "done", 422),
    ("status", "processing", 422),
    ("offset", "-1", 422),
], ids=["garbage", "not-base64", "no-separator", "bad-id", "bad-time", "three-parts", "not-utf8",
        "limit-0", "limit-101", "limit-word", "unknown-status",
        "database-status", "offset-negative"])
async def test_bad_list_query_is_a_400_or_422_problem_naming_the_parameter(
    name: str, value: str, status: int, worker: Stack, tenant: Tenant
) -> None:
    r = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, name: value})

    assert r.status == status and r.is_problem(), (r.status, r.body)
    assert [e["field"] for e in r.body["errors"]] == [name]
