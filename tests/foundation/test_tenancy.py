"""Tenancy and roles: another project's resources are 404; too low a role is 403."""

from __future__ import annotations

from tests.api_client import Tenant


async def test_identity_of_project_a_gets_404_on_every_endpoint_of_project_b(make_tenant) -> None:  # type: ignore[no-untyped-def]
    a: Tenant = await make_tenant("a")
    b: Tenant = await make_tenant("b")
    _, b_viewer = await b.identity("viewer")
    base = f"/api/v1/projects/{b.project_id}/identities"
    calls = [
        ("GET", base, None),
        ("POST", base, {"name": "intruder", "role": "admin"}),
        ("DELETE", f"{base}/{b_viewer['identityId']}", None),
    ]
    for method, path, body in calls:
        r = await a.admin.request(method, path, json_body=body)
        assert r.status == 404 and r.is_problem(), (method, path, r.status, r.body)
    # Nothing changed in B.
    listed = await b.admin.get(base)
    assert {i["identityId"] for i in listed.body["items"]} >= {b_viewer["identityId"]}
    assert all(i["name"] != "intruder" for i in listed.body["items"])


async def test_viewer_and_issuer_get_403_where_admin_is_needed(tenant: Tenant) -> None:
    base = f"/api/v1/projects/{tenant.project_id}/identities"
    for role in ("viewer", "issuer"):
        client, _ = await tenant.identity(role)
        for method, body in (("GET", None), ("POST", {"name": "x", "role": "admin"})):
            r = await client.request(method, base, json_body=body)
            assert r.status == 403 and r.is_problem(), (role, method, r.body)


async def test_unknown_project_is_404(tenant: Tenant) -> None:
    r = await tenant.admin.get("/api/v1/projects/00000000-0000-0000-0000-000000000000/identities")
    assert r.status == 404 and r.is_problem(), r.body


async def test_malformed_ids_in_the_path_are_422_naming_the_parameter(tenant: Tenant) -> None:
    for method, path, field in (
            ("GET", "/api/v1/projects/not-a-uuid/identities", "projectId"),
            ("DELETE", f"/api/v1/projects/{tenant.project_id}/identities/not-a-uuid", "identityId")):
        r = await tenant.admin.request(method, path)
        assert r.status == 422 and r.is_problem(), (path, r.body)
        assert r.body["error"] == "ValidationFailure", (path, r.body)
        assert [e["field"] for e in r.body["errors"]] == [field], (path, r.body)
