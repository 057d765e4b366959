"""Project slugs and upstream's project lookup by slug (DESIGN.md 5.2), and its old health check."""

from __future__ import annotations

import asyncpg
import pytest

from shared.access import slug_of
from tests.api_client import ApiClient, Tenant, assert_problem

BY_SLUG = "/api/v1/projects/slug/"


async def _slug(db: asyncpg.Connection, project_id: str) -> str:
    slug: str = await db.fetchval("SELECT slug FROM projects WHERE id = $1::uuid", project_id)
    return slug


@pytest.mark.parametrize(("name", "slug"), [
    ("alpha", "alpha"), ("Payments Team (EU)", "payments-team-eu"), ("--a__b--", "a-b"), ("Été 2026", "t-2026"),
    ("!!!", "project"), ("x" * 200, "x" * 48),
])
def test_slug_of_a_name_is_lowercase_letters_digits_and_single_hyphens(name: str, slug: str) -> None:
    assert slug_of(name) == slug


async def test_project_by_slug_answers_id_name_and_slug_of_the_callers_project(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    slug = await _slug(db, tenant.project_id)
    assert slug.startswith("alpha")
    r = await tenant.admin.get(BY_SLUG + slug)
    assert r.status == 200, r.body
    assert r.body == {"id": tenant.project_id, "name": "alpha", "slug": slug}


async def test_project_by_slug_is_open_to_a_viewer(tenant: Tenant, db: asyncpg.Connection) -> None:
    viewer, _ = await tenant.identity("viewer")
    r = await viewer.get(BY_SLUG + await _slug(db, tenant.project_id))
    assert r.status == 200 and r.body["id"] == tenant.project_id, r.body


async def test_another_projects_slug_is_404_as_an_unknown_one(make_tenant, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = await make_tenant("mine"), await make_tenant("theirs")
    other = await mine.admin.get(BY_SLUG + await _slug(db, theirs.project_id))
    assert_problem(other, 404)
    unknown = await mine.admin.get(BY_SLUG + "no-such-project-anywhere")
    assert_problem(unknown, 404)
    assert other.body["detail"].replace(await _slug(db, theirs.project_id), "X") == \
        unknown.body["detail"].replace("no-such-project-anywhere", "X")


@pytest.mark.parametrize("slug", ["UPPER", "a%00b", "a" * 300, "%F0%9F%94%91", "-x-"])
async def test_project_by_a_slug_that_cannot_exist_is_404(tenant: Tenant, slug: str) -> None:
    assert_problem(await tenant.admin.get(BY_SLUG + slug), 404)


async def test_project_by_slug_without_a_token_is_401(http: ApiClient, tenant: Tenant) -> None:
    assert_problem(await http.with_token(None).get(BY_SLUG + "alpha"), 401)


async def test_projects_of_the_same_name_get_different_slugs(make_tenant, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    first, second = await make_tenant("Twin Project"), await make_tenant("Twin Project")
    a, b = await _slug(db, first.project_id), await _slug(db, second.project_id)
    assert a != b and a.startswith("twin-project") and b.startswith("twin-project-")
    assert (await second.admin.get(BY_SLUG + b)).body["id"] == second.project_id


async def test_api_status_answers_ok_without_a_token(http: ApiClient) -> None:
    r = await http.with_token(None).get("/api/status")
    assert r.status == 200 and r.body == {"message": "Ok"}, r.body
