"""The request search (``search`` of ``POST /certificate-requests/search`` and ``GET /certificate-requests``):
a request matches when the common name the list shows for it contains the text, in any case (its
certificate's, or while it has none the one it asked for), or when its id is the text. It reads trigram
indexes (migration 0022); these tests hold it to what it finds, including the searches those indexes
cannot serve (fewer than 3 characters) and LIKE's wildcards in the text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import MakeTenant, issued, outcome, request_id_of, submit
from tests.pki_setup import CA, REQUESTS, make_pki
from tests.stack import Stack

Doorbell = Callable[[str], Awaitable[None]]


def named(name: str) -> dict[str, Any]:
    """Attributes asking for a certificate (server-made key) with common name ``name`` and no SAN: the
    tests' policy takes any name under example.test, wildcards of LIKE included."""
    return {"commonName": name}


async def search(client: ApiClient, project_id: str, text: str, **filters: Any) -> tuple[list[str], int]:
    """The ids the search answers (one page of up to 100) and its totalCount."""
    r = await client.post(f"{REQUESTS}/search", {"projectId": project_id, "search": text, "limit": 100, **filters})
    assert r.status == 200, r.body
    return [i["id"] for i in r.body["certificateRequests"]], r.body["totalCount"]


async def issue_all(tenant: Tenant, profile_id: str, names: list[str]) -> dict[str, str]:
    """Each name issued, in order: name -> request id."""
    return {name: (await issued(tenant.admin, profile_id, attributes=named(name)))["certificateRequestId"]
            for name in names}


async def test_search_finds_a_substring_of_the_certificates_common_name_in_any_case(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    ids = await issue_all(tenant, pki.profile_id,
                          ["shop-web.example.test", "blog-web.example.test", "mail.example.test"])

    found, total = await search(tenant.admin, tenant.project_id, "-WEB.Example")
    first = await tenant.admin.post(f"{REQUESTS}/search", {"projectId": tenant.project_id, "search": "web", "limit": 1})
    second = await tenant.admin.post(f"{REQUESTS}/search", {"projectId": tenant.project_id, "search": "web", "limit": 1,
                                                            "cursor": first.body["nextCursor"]})

    assert found == [ids["blog-web.example.test"], ids["shop-web.example.test"]] and total == 2  # newest first
    assert [i["commonName"] for i in first.body["certificateRequests"]] == ["blog-web.example.test"], first.body
    assert first.body["totalCount"] == second.body["totalCount"] == 2
    assert [i["id"] for i in second.body["certificateRequests"]] == [ids["shop-web.example.test"]], second.body
    assert await search(tenant.admin, tenant.project_id, "mail.example.test") == ([ids["mail.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "web.example.tests") == ([], 0)


async def test_search_finds_the_common_name_a_failed_or_pending_request_asked_for(
        worker: Stack, tenant: Tenant, api_without_broker: str, ring_doorbell: Doorbell) -> None:
    """Neither has a certificate: what matches is the common name of the request itself."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    refused = request_id_of(await submit(deaf, pki.profile_id, attributes=named("refused.example.test")))
    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    assert disabled.status == 200, disabled.body
    await ring_doorbell(refused)
    assert (await outcome(tenant.admin, refused))["status"] == "failed"
    # Last, and rung by no one until the searches are done: it stays pending meanwhile.
    waiting = request_id_of(await submit(deaf, pki.profile_id, attributes=named("waiting.example.test")))

    failed = await tenant.admin.post(f"{REQUESTS}/search", {"projectId": tenant.project_id, "search": "REFUSED"})
    pending = await tenant.admin.post(f"{REQUESTS}/search", {"projectId": tenant.project_id, "search": "aiting.ex"})
    both = await search(tenant.admin, tenant.project_id, ".example.test")
    only_failed = await search(tenant.admin, tenant.project_id, ".example.test", status="failed")

    assert [(i["id"], i["status"], i["commonName"], i["certificate"]) for i in failed.body["certificateRequests"]] == [
        (refused, "failed", "refused.example.test", None)], failed.body
    assert [(i["id"], i["status"], i["commonName"]) for i in pending.body["certificateRequests"]] == [
        (waiting, "pending", "waiting.example.test")], pending.body
    assert failed.body["totalCount"] == pending.body["totalCount"] == 1
    assert both == ([waiting, refused], 2)
    assert only_failed == ([refused], 1)
    await ring_doorbell(waiting)  # leaves nothing pending for the tests after this one
    await outcome(tenant.admin, waiting)


async def test_search_by_the_whole_request_id_finds_that_request_and_a_part_of_it_finds_none(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    ids = list((await issue_all(tenant, pki.profile_id, ["one.example.test", "two.example.test"])).values())

    assert await search(tenant.admin, tenant.project_id, ids[0]) == ([ids[0]], 1)
    assert await search(tenant.admin, tenant.project_id, ids[1].upper()) == ([ids[1]], 1)
    assert await search(tenant.admin, tenant.project_id, ids[0][:8]) == ([], 0)
    assert await search(tenant.admin, tenant.project_id, ids[0].replace("-", "")) == ([], 0)


async def test_searches_of_one_or_two_characters_find_every_match(worker: Stack, tenant: Tenant) -> None:
    """Text shorter than a trigram: no index can narrow it, the search still answers exactly."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    ids = await issue_all(tenant, pki.profile_id, ["q1.example.test", "zq.example.test", "plain.example.test"])

    assert await search(tenant.admin, tenant.project_id, "Q") == ([ids["zq.example.test"], ids["q1.example.test"]], 2)
    assert await search(tenant.admin, tenant.project_id, "zq") == ([ids["zq.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "q1") == ([ids["q1.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "1q") == ([], 0)
    assert (await search(tenant.admin, tenant.project_id, "e"))[1] == 3


async def test_like_wildcards_and_backslashes_in_the_search_text_match_only_themselves(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    ids = await issue_all(tenant, pki.profile_id, ["a_b.example.test", "axb.example.test", "50%off.example.test",
                                                   "50-off.example.test", "back\\slash.example.test"])

    assert await search(tenant.admin, tenant.project_id, "a_b") == ([ids["a_b.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "_") == ([ids["a_b.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "0%o") == ([ids["50%off.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "%") == ([ids["50%off.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "k\\s") == ([ids["back\\slash.example.test"]], 1)
    assert await search(tenant.admin, tenant.project_id, "a%b") == ([], 0)
    assert await search(tenant.admin, tenant.project_id, "ax_") == ([], 0)


async def test_search_never_answers_another_projects_requests(worker: Stack, make_tenant: MakeTenant) -> None:
    mine, theirs = await make_tenant("mine"), await make_tenant("theirs")
    my_pki, their_pki = await make_pki(mine.admin, mine.project_id), await make_pki(theirs.admin, theirs.project_id)
    my_id = (await issue_all(mine, my_pki.profile_id, ["shared.example.test"]))["shared.example.test"]
    their_id = (await issue_all(theirs, their_pki.profile_id, ["shared.example.test"]))["shared.example.test"]

    assert await search(mine.admin, mine.project_id, "shared") == ([my_id], 1)
    assert await search(mine.admin, mine.project_id, "sh") == ([my_id], 1)
    assert await search(mine.admin, mine.project_id, their_id) == ([], 0)
    assert await search(theirs.admin, theirs.project_id, "shared.example") == ([their_id], 1)
    other = await mine.admin.post(f"{REQUESTS}/search", {"projectId": theirs.project_id, "search": "shared"})
    assert other.status == 404, other.body
