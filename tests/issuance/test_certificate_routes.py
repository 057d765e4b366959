"""The certificate and request routes on upstream's wire contract (DESIGN.md 5.6): the metadata of a
certificate, its deletion, the chain options a client may send where upstream's clients send them,
statuses on the wire, and the request list's filters (query and POST /search alike)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import CERTIFICATES, MakeTenant, issued, outcome, server_key_attributes, submit
from tests.pki_setup import REQUESTS, Pki, make_pki
from tests.stack import Stack

APPLICATIONS = "/api/v1/cert-manager/applications"


def _fingerprints(pem: str) -> list[bytes]:
    return [c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(pem.encode())]


async def test_certificate_metadata_is_wrapped_active_and_describes_the_leaf(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("meta.example.test"))

    r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}")

    assert r.status == 200 and set(r.body) == {"certificate"}, r.body
    meta = r.body["certificate"]
    leaf = x509.load_pem_x509_certificate(view["certificate"].encode())
    assert meta["id"] == view["certificateId"] and meta["status"] == "active"
    assert meta["projectId"] == tenant.project_id and meta["profileId"] == pki.profile_id
    assert meta["caId"] == pki.issuing_id and meta["caName"] == "web-issuing" and meta["profileName"] == "web"
    assert meta["serialNumber"] == view["serialNumber"] and meta["commonName"] == "meta.example.test"
    assert meta["altNames"] == [{"type": "dns_name", "value": "meta.example.test"}]
    assert meta["subject"] == {"commonName": "meta.example.test"}
    assert meta["keyUsages"] == ["digital_signature"] and meta["extendedKeyUsages"] == ["server_auth"]
    assert meta["basicConstraints"] == {"isCA": False, "pathLength": None}
    assert meta["fingerprints"]["sha256"] == leaf.fingerprint(hashes.SHA256()).hex()
    assert meta["fingerprints"]["sha1"] == leaf.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    assert datetime.fromisoformat(meta["notAfter"]) == leaf.not_valid_after_utc
    assert meta["revokedAt"] is None and meta["revocationReason"] is None
    assert meta["certificateRequestId"] == view["certificateRequestId"]


async def test_certificate_past_its_not_after_reads_expired(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("old.example.test"))
    await db.execute("UPDATE certificates SET not_after = now() - interval '1 minute' WHERE id = $1::uuid",
                     view["certificateId"])

    r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}")
    listed = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id})

    assert r.status == 200 and r.body["certificate"]["status"] == "expired", r.body
    assert listed.body["certificateRequests"][0]["certificate"]["status"] == "expired", listed.body


async def test_private_key_route_answers_the_pem_as_plain_text(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("key.example.test"))

    r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}/private-key")

    assert r.status == 200 and r.content_type == "text/plain", (r.status, r.content_type)
    assert r.body == view["privateKey"] and r.body.startswith("-----BEGIN PRIVATE KEY-----")


async def test_delete_answers_the_certificate_then_its_routes_are_404_and_its_request_still_reads(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("gone.example.test"))
    path = f"{CERTIFICATES}/{view['certificateId']}"

    r = await tenant.admin.request("DELETE", path)

    assert r.status == 200 and r.body["certificate"]["id"] == view["certificateId"], r.body
    for suffix in ("", "/certificate", "/bundle", "/private-key"):
        gone = await tenant.admin.get(path + suffix)
        assert gone.status == 404 and gone.is_problem(), (suffix, gone.status, gone.body)
    assert (await tenant.admin.post(f"{path}/renew")).status == 404
    assert (await tenant.admin.request("DELETE", path)).status == 404
    request = await tenant.admin.get(f"{REQUESTS}/{view['certificateRequestId']}")
    assert request.status == 200 and request.body["status"] == "issued", request.body
    actions = await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'certificate.delete'"
                                " AND subject_id = $1", view["certificateId"])
    assert actions == 1


async def test_delete_needs_an_admin(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("kept.example.test"))
    issuer, _ = await tenant.identity("issuer")

    r = await issuer.request("DELETE", f"{CERTIFICATES}/{view['certificateId']}")

    assert r.status == 403 and r.is_problem(), (r.status, r.body)
    assert (await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}")).status == 200


async def test_remove_roots_inside_attributes_as_the_kms_agent_sends_it_leaves_the_root_out(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    kept = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("root.example.test"))
    removed = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(
        "noroot.example.test", removeRootsFromChain=True))

    assert _fingerprints(kept["certificateChain"]) == _fingerprints(pki.issuing_pem) + _fingerprints(pki.root_pem)
    assert _fingerprints(removed["certificateChain"]) == _fingerprints(pki.issuing_pem)


async def test_renew_honours_remove_roots_in_its_body_and_keeps_the_original_choice_without_one(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    old = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("chain.example.test"))
    path = f"{CERTIFICATES}/{old['certificateId']}/renew"

    without = await tenant.admin.post(path, {"removeRootsFromChain": True}, params={"wait": "10"})
    same = await tenant.admin.post(path, params={"wait": "10"})

    assert without.status == 200 and same.status == 200, (without.body, same.body)
    assert _fingerprints(without.body["certificateChain"]) == _fingerprints(pki.issuing_pem)
    assert _fingerprints(same.body["certificateChain"]) == _fingerprints(old["certificateChain"])


async def test_renew_without_wait_answers_202_with_nulls_and_the_request_to_poll(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    old = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("later.example.test"))

    r = await tenant.admin.post(f"{CERTIFICATES}/{old['certificateId']}/renew", {"removeRootsFromChain": False})

    assert r.status == 202 and r.body["status"] == "pending", r.body
    assert r.body["certificate"] is None and r.body["certificateId"] is None and r.body["certificateRequestId"]
    assert int(r.headers["Retry-After"]) >= 1
    assert (await outcome(tenant.admin, r.body["certificateRequestId"]))["status"] == "issued"


async def test_application_id_of_an_application_grouping_the_profile_is_accepted(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    app = await tenant.admin.post(APPLICATIONS, {"projectId": tenant.project_id, "name": "grouping",
                                                 "profileIds": [pki.profile_id]})
    assert app.status in (200, 201), app.body

    application_id = app.body["application"]["id"]
    r = await tenant.admin.post(CERTIFICATES, {"profileId": pki.profile_id, "applicationId": application_id,
                                               "attributes": server_key_attributes("app.example.test")},
                                params={"wait": "10"})

    assert r.status == 200 and r.body["status"] == "issued", r.body


async def test_application_id_that_does_not_group_the_profile_is_404_and_writes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    other = await tenant.admin.post(APPLICATIONS, {"projectId": tenant.project_id, "name": "elsewhere",
                                                   "profileIds": []})
    assert other.status in (200, 201), other.body
    before = await db.fetchval("SELECT count(*) FROM certificate_requests WHERE project_id = $1::uuid",
                               tenant.project_id)

    for application_id in (other.body["application"]["id"], str(uuid.uuid4())):
        r = await tenant.admin.post(CERTIFICATES, {"profileId": pki.profile_id, "applicationId": application_id,
                                                   "attributes": server_key_attributes("app.example.test")})
        assert r.status == 404 and r.body["errors"][0]["field"] == "applicationId", r.body

    assert await db.fetchval("SELECT count(*) FROM certificate_requests WHERE project_id = $1::uuid",
                             tenant.project_id) == before


async def test_a_request_a_worker_is_signing_reads_pending_on_the_wire(
    worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    r = await submit(deaf, pki.profile_id, attributes=server_key_attributes("busy.example.test"))
    request_id = r.body["certificateRequestId"]
    await db.execute("UPDATE certificate_requests SET status = 'processing', lease_expires_at = now() + interval '1h'"
                     " WHERE id = $1::uuid", request_id)

    got = await tenant.admin.get(f"{REQUESTS}/{request_id}")
    listed = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "status": "pending"})

    assert got.status == 200 and got.body["status"] == "pending", got.body
    assert int(got.headers["Retry-After"]) >= 1
    assert [(i["id"], i["status"]) for i in listed.body["certificateRequests"]] == [(request_id, "pending")]


# -- the list's filters -----------------------------------------------------------------------------


async def _three_requests(tenant: Tenant) -> tuple[Pki, Pki, list[dict[str, object]]]:
    web = await make_pki(tenant.admin, tenant.project_id)
    api = await make_pki(tenant.admin, tenant.project_id, slug="api")
    views = [await issued(tenant.admin, web.profile_id, attributes=server_key_attributes("alpha.example.test")),
             await issued(tenant.admin, web.profile_id, attributes=server_key_attributes("beta.example.test")),
             await issued(tenant.admin, api.profile_id, attributes=server_key_attributes("gamma.example.test"))]
    return web, api, views


async def test_list_pages_by_offset_with_the_total_count(worker: Stack, tenant: Tenant) -> None:
    _, _, views = await _three_requests(tenant)
    newest_first = [v["certificateRequestId"] for v in reversed(views)]

    pages = [await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "limit": "2",
                                                      "offset": str(offset)}) for offset in (0, 2, 4)]

    assert [[i["id"] for i in p.body["certificateRequests"]] for p in pages] == [newest_first[:2], newest_first[2:], []]
    assert {p.body["totalCount"] for p in pages} == {3}


async def test_list_filters_by_search_profile_ids_dates_and_sorts_oldest_first(worker: Stack, tenant: Tenant) -> None:
    web, api, views = await _three_requests(tenant)
    ids = [v["certificateRequestId"] for v in views]
    base = {"projectId": tenant.project_id}

    async def listed(**params: str) -> list[object]:
        r = await tenant.admin.get(REQUESTS, params={**base, **params})
        assert r.status == 200, r.body
        return [i["id"] for i in r.body["certificateRequests"]]

    assert await listed(search="BETA") == [ids[1]]
    assert await listed(search=str(ids[2])) == [ids[2]]
    assert await listed(profileIds=api.profile_id) == [ids[2]]
    assert await listed(profileIds=f"{web.profile_id},{api.profile_id}", sortOrder="asc") == ids
    assert await listed(sortBy="updatedAt", sortOrder="asc") == ids
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert await listed(fromDate=later) == []
    assert await listed(toDate=later, status="issued") == list(reversed(ids))
    assert await listed(status="rejected") == []
    item = (await tenant.admin.get(REQUESTS, params={**base, "search": "gamma"})).body["certificateRequests"][0]
    assert item["profileName"] == "api" and item["caId"] == api.issuing_id
    assert item["commonName"] == "gamma.example.test"


async def test_totals_of_the_request_and_profile_lists_count_every_path_that_stores_one(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    """The unfiltered totals are running counts kept by triggers (migration 0021), not a count of every row
    on every page: single requests, a batch's COPY and a renewal each add theirs, and both totals equal
    what a count of the rows says, in this project and profile only."""
    from tests.batches.batching import server_key_item, wait_completed
    from tests.batches.batching import submit as submit_batch

    pki = await make_pki(tenant.admin, tenant.project_id)
    other = await make_pki(tenant.admin, tenant.project_id, slug="other")
    first = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("one.example.test"))
    await issued(tenant.admin, other.profile_id, attributes=server_key_attributes("two.example.test"))
    batch = await submit_batch(tenant.admin, pki.profile_id, [server_key_item(i) for i in range(7)])
    assert batch.status == 202, batch.body
    await wait_completed(tenant.admin, batch.body["batchId"], 60)
    renewed = await tenant.admin.post(f"{CERTIFICATES}/{first['certificateId']}/renew", params={"wait": "10"})
    assert renewed.status == 200, renewed.body

    requests = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "limit": "1"})
    issued_only = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "status": "issued"})
    of_profile = await tenant.admin.get(f"/api/v1/cert-manager/certificate-profiles/{pki.profile_id}/certificates",
                                        params={"limit": "1"})

    rows = await db.fetchval("SELECT count(*) FROM certificate_requests WHERE project_id = $1::uuid",
                             tenant.project_id)
    certificates = await db.fetchval("SELECT count(*) FROM certificates WHERE profile_id = $1::uuid", pki.profile_id)
    assert rows == 10 and certificates == 9
    assert requests.body["totalCount"] == rows, requests.body
    assert issued_only.body["totalCount"] == rows, issued_only.body  # a filter counts what matches
    assert of_profile.body["totalCount"] == certificates, of_profile.body
    assert len(of_profile.body["certificates"]) == 1


async def test_post_search_takes_the_same_filters_in_the_body(worker: Stack, tenant: Tenant) -> None:
    web, _, views = await _three_requests(tenant)

    r = await tenant.admin.post(f"{REQUESTS}/search", {"projectId": tenant.project_id, "profileIds": [web.profile_id],
                                                       "limit": 1, "offset": 1})
    got = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "profileIds": web.profile_id,
                                                   "limit": "1", "offset": "1"})

    assert r.status == 200 and r.body["totalCount"] == 2, r.body
    assert [i["id"] for i in r.body["certificateRequests"]] == [views[0]["certificateRequestId"]]
    assert r.body["certificateRequests"] == got.body["certificateRequests"]


async def test_list_by_project_slug_is_the_callers_project_and_another_projects_id_is_404(
    worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    owner: Tenant = await make_tenant("owner")
    other: Tenant = await make_tenant("other")
    pki = await make_pki(owner.admin, owner.project_id)
    view = await issued(owner.admin, pki.profile_id, attributes=server_key_attributes("slug.example.test"))
    # Projects get slugs in another part of issue 9; until then any slug names the caller's project.
    slug = await db.fetchval("SELECT to_jsonb(p)->>'slug' FROM projects p WHERE id = $1::uuid", owner.project_id)

    mine = await owner.admin.get(REQUESTS, params={"projectSlug": slug or "owner"})
    theirs = await other.admin.get(REQUESTS, params={"projectId": owner.project_id})
    searched = await other.admin.post(f"{REQUESTS}/search", {"projectId": owner.project_id})
    neither = await owner.admin.get(REQUESTS)

    assert mine.status == 200 and [i["id"] for i in mine.body["certificateRequests"]] == [view["certificateRequestId"]]
    assert theirs.status == 404 and searched.status == 404, (theirs.body, searched.body)
    assert neither.status == 422 and [e["field"] for e in neither.body["errors"]] == ["projectId"]
