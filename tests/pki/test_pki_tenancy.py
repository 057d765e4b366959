"""Tenancy of CAs, policies and profiles (DESIGN.md invariant 8): to project A, project B's ids are a 404
everywhere, in a path, a query or inside a request body, answered exactly as an id that exists nowhere
(so ids do not leak), and nothing is written in either project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests.api_client import Reply, Tenant
from tests.pki.authorities import CAS, POLICIES, PROFILES, ca_body, create_ca
from tests.pki.storage import fingerprint
from tests.pki.test_policies_profiles import policy_body, profile_body
from tests.stack import Stack


@dataclass
class Projects:
    a: Tenant
    b: Tenant
    a_ids: dict[str, str]  # ca, policy, profile
    b_ids: dict[str, str]
    db: asyncpg.Connection
    before: list[list[tuple[str, str]]]

    async def assert_unchanged(self) -> None:
        """Whatever project A tried, neither project changed: same rows, same audit log."""
        assert [await fingerprint(self.db, t.project_id) for t in (self.a, self.b)] == self.before


@pytest.fixture
async def projects(worker: Stack, make_tenant, db: asyncpg.Connection) -> Projects:  # type: ignore[no-untyped-def]
    """Two projects, each with a root CA, a policy and a CA-issued profile (slug ``web`` in both); B also
    has a profile with the slug ``only-in-b``."""
    tenants: list[Tenant] = [await make_tenant("a"), await make_tenant("b")]
    ids: list[dict[str, str]] = []
    for t in tenants:
        ca = await create_ca(t.admin, ca_body(t.project_id, "root"))
        policy = await t.admin.post(POLICIES, policy_body(t.project_id))
        profile = await t.admin.post(PROFILES, profile_body(t.project_id, policy.body["certificatePolicy"]["id"],
                                                             issuerType="ca", caId=ca["id"]))
        assert policy.status == profile.status == 201, (policy.body, profile.body)
        ids.append({"ca": ca["id"], "policy": policy.body["certificatePolicy"]["id"],
                    "profile": profile.body["certificateProfile"]["id"]})
    b = tenants[1]
    only_in_b = await b.admin.post(PROFILES, profile_body(b.project_id, ids[1]["policy"], slug="only-in-b"))
    assert only_in_b.status == 201, only_in_b.body
    before = [await fingerprint(db, t.project_id) for t in tenants]
    return Projects(tenants[0], tenants[1], ids[0], ids[1], db, before)


async def _assert_404_like_a_missing_id(p: Projects, method: str, path: str, body: Any = None,
                                        params: dict[str, str] | None = None) -> None:
    """A's call naming B's id answers 404, exactly like the same call naming an id that does not exist."""
    r = await p.a.admin.request(method, path, json_body=body, params=params)
    assert r.status == 404 and r.is_problem(), (method, path, r.status, r.body)
    missing = str(uuid.uuid4())
    swap = {v: missing for v in (*p.b_ids.values(), p.b.project_id)}

    def replace(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: replace(v) for k, v in value.items()}
        if isinstance(value, str):
            for old, new in swap.items():
                value = value.replace(old, new)
        return value

    control: Reply = await p.a.admin.request(method, replace(path), json_body=replace(body), params=replace(params))
    assert (control.status, control.body["detail"], control.body["errors"]) == \
           (r.status, r.body["detail"], r.body["errors"]), (method, path, control.body, r.body)


async def test_another_projects_ca_is_404_on_every_ca_endpoint(projects: Projects) -> None:
    ca = projects.b_ids["ca"]
    await _assert_404_like_a_missing_id(projects, "GET", f"{CAS}/{ca}")
    await _assert_404_like_a_missing_id(projects, "GET", f"{CAS}/{ca}/certificate")
    await _assert_404_like_a_missing_id(projects, "PATCH", f"{CAS}/{ca}", {"status": "disabled"})
    await _assert_404_like_a_missing_id(projects, "GET", CAS, params={"projectId": projects.b.project_id})
    await _assert_404_like_a_missing_id(projects, "POST", CAS, ca_body(projects.b.project_id, "intruder"))
    await projects.assert_unchanged()


async def test_another_projects_policy_is_404_on_every_policy_endpoint(projects: Projects) -> None:
    policy = projects.b_ids["policy"]
    await _assert_404_like_a_missing_id(projects, "GET", f"{POLICIES}/{policy}")
    await _assert_404_like_a_missing_id(projects, "PATCH", f"{POLICIES}/{policy}", {"description": "intruder"})
    await _assert_404_like_a_missing_id(projects, "DELETE", f"{POLICIES}/{policy}")
    await _assert_404_like_a_missing_id(projects, "GET", POLICIES, params={"projectId": projects.b.project_id})
    await _assert_404_like_a_missing_id(projects, "POST", POLICIES, policy_body(projects.b.project_id, "intruder"))
    await projects.assert_unchanged()


async def test_another_projects_profile_is_404_on_every_profile_endpoint(projects: Projects) -> None:
    profile, b_project = projects.b_ids["profile"], projects.b.project_id
    await _assert_404_like_a_missing_id(projects, "GET", f"{PROFILES}/{profile}")
    await _assert_404_like_a_missing_id(projects, "PATCH", f"{PROFILES}/{profile}", {"description": "intruder"})
    await _assert_404_like_a_missing_id(projects, "DELETE", f"{PROFILES}/{profile}")
    await _assert_404_like_a_missing_id(projects, "GET", PROFILES, params={"projectId": b_project})
    await _assert_404_like_a_missing_id(projects, "GET", f"{PROFILES}/slug/web", params={"projectId": b_project})
    await _assert_404_like_a_missing_id(projects, "POST", PROFILES,
                                        profile_body(b_project, projects.b_ids["policy"], slug="intruder"))
    await projects.assert_unchanged()


async def test_another_projects_ca_as_parent_of_a_new_ca_is_404(projects: Projects) -> None:
    await _assert_404_like_a_missing_id(projects, "POST", CAS, ca_body(projects.a.project_id, "adopted",
                                                                        parent=projects.b_ids["ca"]))
    await projects.assert_unchanged()


async def test_another_projects_ca_as_a_profiles_issuer_is_404(projects: Projects) -> None:
    a_project, a_ids, b_ca = projects.a.project_id, projects.a_ids, projects.b_ids["ca"]
    await _assert_404_like_a_missing_id(projects, "POST", PROFILES, profile_body(
        a_project, a_ids["policy"], slug="borrowed-ca", issuerType="ca", caId=b_ca))
    await _assert_404_like_a_missing_id(projects, "PATCH", f"{PROFILES}/{a_ids['profile']}", {"caId": b_ca})
    await projects.assert_unchanged()


async def test_another_projects_policy_in_a_profile_is_404(projects: Projects) -> None:
    a_project, a_ids, b_policy = projects.a.project_id, projects.a_ids, projects.b_ids["policy"]
    await _assert_404_like_a_missing_id(projects, "POST", PROFILES, profile_body(
        a_project, b_policy, slug="borrowed-policy", issuerType="ca", caId=a_ids["ca"]))
    await _assert_404_like_a_missing_id(projects, "PATCH", f"{PROFILES}/{a_ids['profile']}",
                                        {"certificatePolicyId": b_policy})
    await projects.assert_unchanged()


async def test_slug_lookup_in_ones_own_project_never_finds_another_projects_profile(projects: Projects) -> None:
    r = await projects.a.admin.get(f"{PROFILES}/slug/only-in-b")
    never = await projects.a.admin.get(f"{PROFILES}/slug/exists-nowhere")

    assert r.status == 404 and r.is_problem(), r.body
    assert (never.status, never.body["detail"]) == (r.status, r.body["detail"])
    await projects.assert_unchanged()
