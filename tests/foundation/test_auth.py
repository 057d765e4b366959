"""Machine identity login and bearer tokens: what works, and each way a token is refused."""

from __future__ import annotations

import asyncpg
import pytest

from shared.secrets.credentials import token_digest
from tests.api_client import ApiClient, Tenant, login
from tests.conftest import bootstrap
from tests.stack import Stack

LOGIN = "/api/v1/auth/universal-auth/login"


def identities(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/identities"


async def test_bootstrap_cli_then_login_gives_a_token_that_works_on_a_protected_endpoint(
    stack: Stack, http: ApiClient
) -> None:
    creds = bootstrap(stack, "cli-project")
    assert set(creds) == {"projectId", "clientId", "clientSecret"}
    r = await http.post(LOGIN, {"clientId": creds["clientId"], "clientSecret": creds["clientSecret"]})
    assert r.status == 200
    assert r.body["tokenType"] == "Bearer" and r.body["expiresIn"] > 0
    listed = await http.with_token(r.body["accessToken"]).get(identities(creds["projectId"]))
    assert listed.status == 200
    assert [i["clientId"] for i in listed.body["items"]] == [creds["clientId"]]
    assert all("clientSecret" not in i for i in listed.body["items"])


async def test_wrong_secret_is_401_problem(tenant: Tenant, http: ApiClient) -> None:
    r = await http.post(LOGIN, {"clientId": tenant.client_id, "clientSecret": tenant.client_secret + "x"})
    assert r.status == 401 and r.is_problem()
    assert "accessToken" not in r.body


async def test_unknown_client_id_is_401_problem(http: ApiClient) -> None:
    r = await http.post(LOGIN, {"clientId": "kms_ci_" + "0" * 32, "clientSecret": "kms_cs_nope"})
    assert r.status == 401 and r.is_problem()


@pytest.mark.parametrize("header", [
    None,
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-token",
    "Bearer kms_at_" + "!" * 43,
    "Bearer " + "kms_at_" + "a" * 500,
], ids=["missing", "empty-bearer", "basic-scheme", "malformed", "bad-charset", "oversized"])
async def test_missing_or_malformed_token_is_401_problem(tenant: Tenant, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {"Authorization": ""}
    r = await tenant.admin.with_token(None).get(identities(tenant.project_id), headers=headers)
    assert r.status == 401 and r.is_problem()


async def test_tampered_token_is_401_problem(tenant: Tenant) -> None:
    token = tenant.admin.token
    assert token is not None
    last = token[-1]
    tampered = token[:-1] + ("A" if last != "A" else "B")
    r = await tenant.admin.with_token(tampered).get(identities(tenant.project_id))
    assert r.status == 401 and r.is_problem()


async def test_expired_token_is_401_problem(tenant: Tenant, db: asyncpg.Connection) -> None:
    token = tenant.admin.token
    assert token is not None
    assert (await tenant.admin.get(identities(tenant.project_id))).status == 200
    await db.execute("UPDATE access_tokens SET expires_at = now() - interval '1 second'"
                     " WHERE token_digest = $1", token_digest(token))
    r = await tenant.admin.get(identities(tenant.project_id))
    assert r.status == 401 and r.is_problem()
    assert "expired" in r.body["detail"]


async def test_deleted_identity_token_stops_working_at_once(tenant: Tenant) -> None:
    viewer, created = await tenant.identity("viewer")
    assert (await viewer.get(f"/api/v1/projects/{tenant.project_id}/identities")).status == 403
    d = await tenant.admin.delete(f"{identities(tenant.project_id)}/{created['identityId']}")
    assert d.status == 204
    r = await viewer.get(identities(tenant.project_id))
    assert r.status == 401 and r.is_problem()
    # ... and its credentials no longer log in.
    again = await tenant.admin.post(LOGIN, {"clientId": created["clientId"],
                                            "clientSecret": created["clientSecret"]})
    assert again.status == 401
    listed = await tenant.admin.get(identities(tenant.project_id))
    assert created["identityId"] not in [i["identityId"] for i in listed.body["items"]]


async def test_created_identity_secret_is_shown_once_and_logs_in(tenant: Tenant) -> None:
    client, created = await tenant.identity("issuer", "ci-bot")
    assert created["role"] == "issuer" and created["clientSecret"]
    assert client.token
    listed = await tenant.admin.get(identities(tenant.project_id))
    entry = next(i for i in listed.body["items"] if i["identityId"] == created["identityId"])
    assert "clientSecret" not in entry and entry["name"] == "ci-bot"


async def test_login_response_and_request_id_header(http: ApiClient, tenant: Tenant) -> None:
    r = await http.post(LOGIN, {"clientId": tenant.client_id, "clientSecret": tenant.client_secret},
                        headers={"X-Request-Id": "trace-123"})
    assert r.headers["X-Request-Id"] == "trace-123"
    token = await login(http, tenant.client_id, tenant.client_secret)
    assert token != tenant.admin.token  # every login mints a fresh token
