"""Applications over HTTP (DESIGN.md 5.5): named groups of a project's profiles, which the KMS agent
(``version: v2``) and the newer cert-manager issuer resolve by name. Admin writes, viewer reads; another
project's application or profile is a 404 like a missing one, and nothing is written."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.api_client import ApiClient, Tenant
from tests.pki.authorities import POLICIES, PROFILES
from tests.pki.storage import fingerprint
from tests.pki.test_policies_profiles import policy_body, profile_body

APPLICATIONS = "/api/v1/cert-manager/applications"


async def _profile(client: ApiClient, project_id: str, slug: str) -> dict[str, Any]:
    policy = await client.post(POLICIES, policy_body(project_id, f"{slug}-policy"))
    assert policy.status == 201, policy.body
    r = await client.post(PROFILES, profile_body(project_id, policy.body["certificatePolicy"]["id"], slug=slug))
    assert r.status == 201, r.body
    profile: dict[str, Any] = r.body["certificateProfile"]
    return profile


async def _application(client: ApiClient, project_id: str, name: str, profile_ids: list[str]) -> dict[str, Any]:
    r = await client.post(APPLICATIONS, {"projectId": project_id, "name": name, "description": f"{name} services",
                                         "profileIds": profile_ids})
    assert r.status == 201 and set(r.body) == {"application"}, r.body
    application: dict[str, Any] = r.body["application"]
    return application


@pytest.fixture
async def web(tenant: Tenant) -> dict[str, Any]:
    return await _profile(tenant.admin, tenant.project_id, "web")


async def test_created_application_reads_back_by_id_by_name_and_in_the_list(
        tenant: Tenant, web: dict[str, Any]) -> None:
    created = await _application(tenant.admin, tenant.project_id, "storefront", [web["id"]])

    assert (created["name"], created["description"], created["projectId"]) == (
        "storefront", "storefront services", tenant.project_id)
    by_id = await tenant.admin.get(f"{APPLICATIONS}/{created['id']}")
    by_name = await tenant.admin.get(f"{APPLICATIONS}/by-name/storefront")
    with_project = await tenant.admin.get(f"{APPLICATIONS}/by-name/storefront",
                                          params={"projectId": tenant.project_id})
    listed = await tenant.admin.get(APPLICATIONS, params={"projectId": tenant.project_id})
    assert by_id.status == by_name.status == with_project.status == listed.status == 200
    assert by_id.body == by_name.body == with_project.body == {"application": created}
    assert listed.body == {"applications": [created], "totalCount": 1}


async def test_application_lists_its_profiles_with_their_slugs(tenant: Tenant, web: dict[str, Any]) -> None:
    api = await _profile(tenant.admin, tenant.project_id, "api")
    created = await _application(tenant.admin, tenant.project_id, "shop", [web["id"], api["id"]])

    r = await tenant.admin.get(f"{APPLICATIONS}/{created['id']}/profiles")

    assert r.status == 200, r.body
    assert sorted(r.body["profiles"], key=lambda p: p["profileSlug"]) == [
        {"applicationId": created["id"], "profileId": api["id"], "profileSlug": "api"},
        {"applicationId": created["id"], "profileId": web["id"], "profileSlug": "web"}]


async def test_profiles_added_to_an_application_join_those_it_had(tenant: Tenant, web: dict[str, Any]) -> None:
    api = await _profile(tenant.admin, tenant.project_id, "api")
    created = await _application(tenant.admin, tenant.project_id, "shop", [web["id"]])

    r = await tenant.admin.post(f"{APPLICATIONS}/{created['id']}/profiles", {"profileIds": [api["id"], web["id"]]})

    assert r.status == 200, r.body
    assert {p["profileSlug"] for p in r.body["profiles"]} == {"web", "api"}


async def test_profile_removed_from_an_application_is_no_longer_listed_and_still_exists(
        tenant: Tenant, web: dict[str, Any]) -> None:
    created = await _application(tenant.admin, tenant.project_id, "shop", [web["id"]])

    r = await tenant.admin.delete(f"{APPLICATIONS}/{created['id']}/profiles/{web['id']}")

    assert r.status == 200 and r.body == {"profiles": []}, r.body
    assert (await tenant.admin.get(f"{PROFILES}/{web['id']}")).status == 200
    again = await tenant.admin.delete(f"{APPLICATIONS}/{created['id']}/profiles/{web['id']}")
    assert again.status == 404 and again.is_problem(), again.body


async def test_deleted_profile_leaves_the_applications_it_was_in(tenant: Tenant, web: dict[str, Any]) -> None:
    created = await _application(tenant.admin, tenant.project_id, "shop", [web["id"]])

    assert (await tenant.admin.delete(f"{PROFILES}/{web['id']}")).status == 200

    r = await tenant.admin.get(f"{APPLICATIONS}/{created['id']}/profiles")
    assert r.status == 200 and r.body == {"profiles": []}, r.body


async def test_duplicate_application_name_in_a_project_is_409_and_writes_nothing(
        tenant: Tenant, web: dict[str, Any], db: asyncpg.Connection) -> None:
    await _application(tenant.admin, tenant.project_id, "shop", [])
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(APPLICATIONS, {"projectId": tenant.project_id, "name": "shop",
                                               "profileIds": [web["id"]]})

    assert r.status == 409 and r.is_problem(), r.body
    assert await fingerprint(db, tenant.project_id) == before


MALFORMED: dict[str, dict[str, Any]] = {
    "no name": {},
    "a name with a slash": {"name": "a/b"},
    "a profile id that is not a UUID": {"name": "ok", "profileIds": ["web"]},
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_application_is_422_and_writes_nothing(
        tenant: Tenant, db: asyncpg.Connection, case: str) -> None:
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(APPLICATIONS, {"projectId": tenant.project_id, **MALFORMED[case]})

    assert r.status == 422 and r.is_problem(), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_application_with_an_unknown_profile_is_404_and_writes_nothing(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(APPLICATIONS, {"projectId": tenant.project_id, "name": "shop",
                                               "profileIds": [str(uuid.uuid4())]})

    assert r.status == 404 and r.is_problem(), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_unknown_application_name_is_404(tenant: Tenant) -> None:
    r = await tenant.admin.get(f"{APPLICATIONS}/by-name/nowhere")

    assert r.status == 404 and r.is_problem(), r.body


async def test_viewer_reads_applications_but_gets_403_on_every_change(
        tenant: Tenant, web: dict[str, Any], db: asyncpg.Connection) -> None:
    created = await _application(tenant.admin, tenant.project_id, "shop", [web["id"]])
    viewer, _ = await tenant.identity("viewer")
    for path in (f"{APPLICATIONS}/{created['id']}", f"{APPLICATIONS}/by-name/shop",
                 f"{APPLICATIONS}/{created['id']}/profiles"):
        assert (await viewer.get(path)).status == 200, path
    before = await fingerprint(db, tenant.project_id)

    replies = [
        await viewer.post(APPLICATIONS, {"projectId": tenant.project_id, "name": "by-viewer"}),
        await viewer.post(f"{APPLICATIONS}/{created['id']}/profiles", {"profileIds": [web["id"]]}),
        await viewer.delete(f"{APPLICATIONS}/{created['id']}/profiles/{web['id']}"),
    ]

    assert [r.status for r in replies] == [403] * 3, [r.body for r in replies]
    assert await fingerprint(db, tenant.project_id) == before


async def test_another_projects_application_and_profiles_are_404_everywhere(  # type: ignore[no-untyped-def]
        make_tenant, db: asyncpg.Connection) -> None:
    a: Tenant = await make_tenant("a")
    b: Tenant = await make_tenant("b")
    a_web = await _profile(a.admin, a.project_id, "web")
    b_web = await _profile(b.admin, b.project_id, "web")
    b_app = await _application(b.admin, b.project_id, "shop", [b_web["id"]])
    a_app = await _application(a.admin, a.project_id, "mine", [a_web["id"]])
    before = [await fingerprint(db, t.project_id) for t in (a, b)]

    replies = [
        await a.admin.get(f"{APPLICATIONS}/{b_app['id']}"),
        await a.admin.get(f"{APPLICATIONS}/{b_app['id']}/profiles"),
        await a.admin.post(f"{APPLICATIONS}/{b_app['id']}/profiles", {"profileIds": [a_web["id"]]}),
        await a.admin.delete(f"{APPLICATIONS}/{b_app['id']}/profiles/{b_web['id']}"),
        await a.admin.get(f"{APPLICATIONS}/by-name/shop"),
        await a.admin.get(f"{APPLICATIONS}/by-name/shop", params={"projectId": b.project_id}),
        await a.admin.get(APPLICATIONS, params={"projectId": b.project_id}),
        await a.admin.post(APPLICATIONS, {"projectId": b.project_id, "name": "intruder"}),
        # B's profile, named in A's own application or a new one of A's.
        await a.admin.post(f"{APPLICATIONS}/{a_app['id']}/profiles", {"profileIds": [b_web["id"]]}),
        await a.admin.post(APPLICATIONS, {"projectId": a.project_id, "name": "x", "profileIds": [b_web["id"]]}),
    ]

    assert [r.status for r in replies] == [404] * len(replies), [r.body for r in replies]
    assert all(r.is_problem() for r in replies)
    assert [await fingerprint(db, t.project_id) for t in (a, b)] == before
