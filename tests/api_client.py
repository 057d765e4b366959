"""A small HTTP client for tests: every call returns the status, the decoded body and the headers."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from tests.stack import Stack


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    content_type: str

    def is_problem(self) -> bool:
        return (self.content_type == "application/problem+json" and isinstance(self.body, dict)
                and {"type", "title", "status", "detail"} <= set(self.body) and self.body["status"] == self.status)


def assert_problem(r: Reply, status: int | Collection[int]) -> None:
    """A clear problem+json answer with the status (or one of the statuses) given: it names its request
    id, as the X-Request-Id header does, carries upstream's fields too (DESIGN.md 5.1), and shows no
    traceback."""
    wanted = {status} if isinstance(status, int) else set(status)
    assert r.status in wanted, (r.status, r.body)
    assert r.is_problem(), (r.content_type, r.body)
    assert r.body["requestId"] == r.body["reqId"] == r.headers["X-Request-Id"], r.body
    assert r.body["statusCode"] == r.status and r.body["message"] == r.body["detail"], r.body
    assert "Traceback" not in str(r.body)


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.session = session
        self.base = base
        self.token = token

    def with_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.session, self.base, token)

    async def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:
        hdrs = dict(headers or {})
        if self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=hdrs,
                                        params=params) as resp:
            raw = await resp.read()
            ctype = resp.content_type
            body: Any = raw.decode(errors="replace")
            if ctype.endswith("json") and raw:
                body = json.loads(raw)
            return Reply(resp.status, body, resp.headers, ctype)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json_body=body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PATCH", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)


@dataclass
class Tenant:
    """A project with an admin identity logged in, and a way to add identities of other roles."""

    project_id: str
    client_id: str
    client_secret: str
    admin: ApiClient

    async def identity(self, role: str, name: str | None = None) -> tuple[ApiClient, dict[str, Any]]:
        r = await self.admin.post(f"/api/v1/projects/{self.project_id}/identities",
                                  {"name": name or f"{role}-id", "role": role})
        assert r.status == 201, r.body
        token = await login(self.admin, r.body["clientId"], r.body["clientSecret"])
        return self.admin.with_token(token), r.body


async def login(client: ApiClient, client_id: str, client_secret: str) -> str:
    r = await client.with_token(None).post("/api/v1/auth/universal-auth/login",
                                           {"clientId": client_id, "clientSecret": client_secret})
    assert r.status == 200, r.body
    token: str = r.body["accessToken"]
    return token


async def new_tenant(database_url: str, client: ApiClient, name: str) -> Tenant:
    """The tests' one tenant set-up: a new project, bootstrapped in-process on the database (the
    ``kms-pki admin bootstrap`` command has tests of its own), with its admin logged in through
    ``client``'s API."""
    from shared import access
    from shared.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        project_id, new = await access.bootstrap(pool, name)
    finally:
        await pool.close()
    token = await login(client, new.identity.client_id, new.client_secret)
    return Tenant(str(project_id), new.identity.client_id, new.client_secret, client.with_token(token))


async def open_tenant(stack: Stack, session: aiohttp.ClientSession, name: str) -> Tenant:
    """``new_tenant`` on a stack's API, for fixtures wider than one test (``make_tenant`` is per test)."""
    return await new_tenant(stack.database_url, ApiClient(session, stack.api_url), name)
