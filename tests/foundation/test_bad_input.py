"""Bad input gets a clear 4xx problem+json, never a 500 or a traceback, and writes nothing: 400 for
malformed JSON, 422 for a body that fails the schema (DESIGN.md 5.1, upstream's codes). Unknown fields are
ignored, as upstream does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests.api_client import Reply, Tenant


async def counts(db: asyncpg.Connection, project_id: str) -> dict[str, int]:
    """What a request could write, counted in the test's own project (the session's worker keeps writing
    audit events of other projects), and the projects."""
    mine = {t: await db.fetchval(f"SELECT count(*) FROM {t} WHERE project_id = $1::uuid", project_id)
            for t in ("identities", "audit_events")}
    mine["access_tokens"] = await db.fetchval(
        "SELECT count(*) FROM access_tokens t JOIN identities i ON i.id = t.identity_id WHERE i.project_id = $1::uuid",
        project_id)
    mine["projects"] = await db.fetchval("SELECT count(*) FROM projects")
    return mine


def identities(t: Tenant) -> str:
    return f"/api/v1/projects/{t.project_id}/identities"


CASES: dict[str, tuple[int, Callable[[Tenant], Awaitable[Reply]]]] = {
    "malformed-json": (400, lambda t: t.admin.request(
        "POST", identities(t), data=b'{"name": "x", "role":', headers={"Content-Type": "application/json"})),
    "json-not-an-object": (422, lambda t: t.admin.post(identities(t), ["admin"])),
    "wrong-types": (422, lambda t: t.admin.post(identities(t), {"name": 42, "role": ["admin"]})),
    "unknown-role": (422, lambda t: t.admin.post(identities(t), {"name": "x", "role": "root"})),
    "missing-fields": (422, lambda t: t.admin.post(identities(t), {})),
    "empty-body": (400, lambda t: t.admin.request(
        "POST", identities(t), data=b"", headers={"Content-Type": "application/json"})),
    "invalid-utf8": (400, lambda t: t.admin.request(
        "POST", identities(t), data=b'{"name": "\xff\xfe", "role": "admin"}',
        headers={"Content-Type": "application/json"})),
    "non-json-content-type": (400, lambda t: t.admin.request(
        "POST", identities(t), data=b"name=x&role=admin",
        headers={"Content-Type": "application/x-www-form-urlencoded"})),
    "five-mib-body": (413, lambda t: t.admin.request(
        "POST", identities(t), data=b'{"name": "' + b"a" * (5 * 1024 * 1024) + b'", "role": "admin"}',
        headers={"Content-Type": "application/json"})),
    "five-mib-chunked-body": (413, lambda t: t.admin.request(
        "POST", identities(t), data=_chunks(5 * 1024 * 1024), headers={"Content-Type": "application/json"})),
    "five-mib-login": (413, lambda t: t.admin.with_token(None).request(
        "POST", "/api/v1/auth/universal-auth/login", data=b"{" + b" " * (5 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"})),
    "login-wrong-types": (422, lambda t: t.admin.with_token(None).post(
        "/api/v1/auth/universal-auth/login", {"clientId": 1, "clientSecret": None})),
    "unknown-route": (404, lambda t: t.admin.get("/api/v1/no-such-thing")),
    "wrong-method": (405, lambda t: t.admin.request("PUT", identities(t), json_body={})),
    "wrong-method-public": (405, lambda t: t.admin.request("DELETE", "/healthz")),
}


async def _chunks(total: int):  # type: ignore[no-untyped-def]
    yield b'{"name": "'
    sent = 0
    while sent < total:
        yield b"a" * 65536
        sent += 65536
    yield b'", "role": "admin"}'


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_4xx_problem_json_and_writes_nothing(
    case: str, tenant: Tenant, db: asyncpg.Connection
) -> None:
    expected, send = CASES[case]
    before = await counts(db, tenant.project_id)
    r = await send(tenant)
    assert r.status == expected, (case, r.status, r.body)
    assert r.is_problem(), (case, r.content_type, r.body)
    assert r.body["requestId"] == r.headers["X-Request-Id"]
    assert r.body["statusCode"] == expected and r.body["message"] == r.body["detail"], (case, r.body)
    if expected == 422:
        assert r.body["error"] == "ValidationFailure", (case, r.body)
    assert "Traceback" not in str(r.body)
    assert await counts(db, tenant.project_id) == before


async def test_unknown_field_is_ignored_and_the_identity_is_created(tenant: Tenant, db: asyncpg.Connection) -> None:
    mine = "SELECT count(*) FROM identities WHERE project_id = $1::uuid"
    before = await db.fetchval(mine, tenant.project_id)

    r = await tenant.admin.post(identities(tenant), {"name": "newer-client", "role": "viewer", "x": 1})

    assert r.status == 201, r.body
    assert r.body["name"] == "newer-client" and r.body["role"] == "viewer" and "x" not in r.body, r.body
    assert await db.fetchval(mine, tenant.project_id) == before + 1
    listed = await tenant.admin.get(identities(tenant))
    (created,) = [i for i in listed.body["items"] if i["name"] == "newer-client"]
    assert "x" not in created, created


async def test_field_errors_name_every_bad_field(tenant: Tenant) -> None:
    r = await tenant.admin.post(identities(tenant), {"name": "", "role": "wizard"})
    assert r.status == 422, r.body
    assert {e["field"] for e in r.body["errors"]} == {"name", "role"}


async def test_error_body_carries_upstream_and_problem_fields(tenant: Tenant) -> None:
    """A 400, a 404 and a 422 each carry upstream's ``{reqId, statusCode, message, error}`` (what its
    clients log) beside the problem+json fields (DESIGN.md 5.1)."""
    replies = {
        "BadRequest": await tenant.admin.request(
            "POST", identities(tenant), data=b'{"name": "x", "role":', headers={"Content-Type": "application/json"}),
        "NotFound": await tenant.admin.request(
            "DELETE", f"{identities(tenant)}/00000000-0000-0000-0000-000000000000"),
        "ValidationFailure": await tenant.admin.post(identities(tenant), {"name": 42, "role": "admin"}),
    }

    for (error, r), status in zip(replies.items(), (400, 404, 422), strict=True):
        assert r.status == status and r.is_problem(), (error, r.status, r.body)
        body = r.body
        assert body["reqId"] == body["requestId"] == r.headers["X-Request-Id"], (error, body)
        assert body["statusCode"] == body["status"] == status, (error, body)
        assert body["error"] == error, body
        assert body["message"] and body["message"] == body["detail"], body
        assert body["type"].startswith("https://kms.hanzo.ai/problems/") and body["title"], body
        assert body["details"] == body["errors"], body
    assert [e["field"] for e in replies["ValidationFailure"].body["errors"]] == ["name"]
