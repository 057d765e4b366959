"""Machine identity login and bearer tokens: what works, and each way a token is refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from shared.config import Settings
from shared.secrets.credentials import token_digest
from tests.api_client import ApiClient, Tenant, assert_problem, login
from tests.conftest import bootstrap
from tests.stack import Stack

LOGIN = "/api/v1/auth/universal-auth/login"
RENEW = "/api/v1/auth/token/renew"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEFAULTS = Settings()


def identities(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/identities"


async def test_bootstrap_cli_then_login_gives_a_token_that_works_on_a_protected_endpoint(
    stack: Stack, http: ApiClient
) -> None:
    creds = bootstrap(stack, "cli-project")
    assert set(creds) == {"projectId", "projectSlug", "clientId", "clientSecret"}
    assert creds["projectSlug"].startswith("cli-project")
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
    # A token the API has not seen yet, expired in the database (an API process trusts a token it has
    # looked up until its expiry, at most KMS_TOKEN_CACHE_SECONDS: tests/unit/test_token_cache.py).
    admin, _ = await tenant.identity("admin")
    token = admin.token
    assert token is not None
    await db.execute("UPDATE access_tokens SET expires_at = now() - interval '1 second'"
                     " WHERE token_digest = $1", token_digest(token))
    r = await admin.get(identities(tenant.project_id))
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


# -- upstream's login answer (DESIGN.md 5.2) -------------------------------------------------------------


async def test_login_answers_upstreams_four_fields_with_the_configured_ttl_and_max_ttl(
        http: ApiClient, tenant: Tenant) -> None:
    r = await http.post(LOGIN, {"clientId": tenant.client_id, "clientSecret": tenant.client_secret})
    assert r.status == 200, r.body
    assert set(r.body) == {"accessToken", "expiresIn", "accessTokenMaxTTL", "tokenType"}, r.body
    assert r.body["expiresIn"] == DEFAULTS.token_ttl_seconds == 3600
    assert r.body["accessTokenMaxTTL"] == DEFAULTS.token_max_ttl_seconds == 30 * 86400
    assert r.body["tokenType"] == "Bearer"


async def test_form_encoded_login_gives_a_working_token(http: ApiClient, tenant: Tenant) -> None:
    r = await http.request("POST", LOGIN, data={"clientId": tenant.client_id, "clientSecret": tenant.client_secret},
                           headers=FORM)
    assert r.status == 200, r.body
    assert r.body["accessTokenMaxTTL"] >= r.body["expiresIn"] > 0
    assert (await http.with_token(r.body["accessToken"]).get(identities(tenant.project_id))).status == 200


async def test_form_encoded_login_with_a_wrong_secret_is_401_problem(http: ApiClient, tenant: Tenant) -> None:
    r = await http.request("POST", LOGIN, data={"clientId": tenant.client_id, "clientSecret": "wrong"},
                           headers=FORM)
    assert_problem(r, 401)


async def test_form_encoded_login_without_the_secret_is_422_naming_the_field(http: ApiClient) -> None:
    r = await http.request("POST", LOGIN, data={"clientId": "kms_ci_x"}, headers=FORM)
    assert_problem(r, 422)
    assert [e["field"] for e in r.body["errors"]] == ["clientSecret"], r.body


@pytest.mark.parametrize("raw", ["clientId=%ff%fe&clientSecret=x", "clientId=a%00b&clientSecret=x", "&&=&"],
                         ids=["not-utf8", "nul", "no-fields"])
async def test_malformed_form_encoded_login_is_a_clear_4xx(http: ApiClient, raw: str) -> None:
    r = await http.request("POST", LOGIN, data=raw, headers=FORM)
    assert_problem(r, (400, 422))


# -- token renewal ---------------------------------------------------------------------------------------


async def _login_answer(http: ApiClient, tenant: Tenant) -> dict[str, Any]:
    r = await http.post(LOGIN, {"clientId": tenant.client_id, "clientSecret": tenant.client_secret})
    assert r.status == 200, r.body
    answer: dict[str, Any] = r.body
    return answer


async def test_token_renew_with_the_token_in_the_body_only_extends_the_same_token(
        http: ApiClient, tenant: Tenant, db: asyncpg.Connection) -> None:
    first = await _login_answer(http, tenant)
    digest = token_digest(first["accessToken"])
    await db.execute("UPDATE access_tokens SET expires_at = now() + interval '60 seconds' WHERE token_digest = $1",
                     digest)
    r = await http.post(RENEW, {"accessToken": first["accessToken"]})
    assert r.status == 200, r.body
    assert set(r.body) == {"accessToken", "expiresIn", "accessTokenMaxTTL", "tokenType"}, r.body
    assert r.body["accessToken"] == first["accessToken"] and r.body["tokenType"] == "Bearer"
    assert DEFAULTS.token_ttl_seconds - 5 <= r.body["expiresIn"] <= DEFAULTS.token_ttl_seconds, r.body
    assert r.body["accessTokenMaxTTL"] == first["accessTokenMaxTTL"]
    left = await db.fetchval("SELECT extract(epoch FROM expires_at - now()) FROM access_tokens"
                             " WHERE token_digest = $1", digest)
    assert left > 3000
    assert (await http.with_token(r.body["accessToken"]).get(identities(tenant.project_id))).status == 200


async def test_token_renew_never_extends_a_token_past_its_logins_max_ttl(
        http: ApiClient, tenant: Tenant, db: asyncpg.Connection) -> None:
    first = await _login_answer(http, tenant)
    digest = token_digest(first["accessToken"])
    # As if the login were 30 days less 100 seconds ago: 100 seconds are left of its maximum.
    await db.execute("UPDATE access_tokens SET expires_at = now() + interval '50 seconds',"
                     " max_expires_at = now() + interval '100 seconds' WHERE token_digest = $1", digest)
    r = await http.post(RENEW, {"accessToken": first["accessToken"]})
    assert r.status == 200, r.body
    assert 90 <= r.body["expiresIn"] <= 100, r.body
    ends, cap = await db.fetchrow("SELECT expires_at, max_expires_at FROM access_tokens WHERE token_digest = $1",
                                  digest)
    assert ends == cap


async def test_token_renew_with_the_bearer_header_too_works_as_the_node_sdk_sends_it(
        http: ApiClient, tenant: Tenant) -> None:
    first = await _login_answer(http, tenant)
    r = await http.with_token(first["accessToken"]).post(RENEW, {"accessToken": first["accessToken"]})
    assert r.status == 200 and r.body["accessToken"] == first["accessToken"], r.body


async def test_token_renew_of_an_expired_token_is_401_and_it_stays_expired(
        http: ApiClient, tenant: Tenant, db: asyncpg.Connection) -> None:
    first = await _login_answer(http, tenant)
    digest = token_digest(first["accessToken"])
    await db.execute("UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE token_digest = $1",
                     digest)
    assert_problem(await http.post(RENEW, {"accessToken": first["accessToken"]}), 401)
    assert_problem(await http.with_token(first["accessToken"]).get(identities(tenant.project_id)), 401)


async def test_token_renew_of_a_deleted_identitys_token_is_401(tenant: Tenant, http: ApiClient) -> None:
    viewer, created = await tenant.identity("viewer")
    assert (await tenant.admin.delete(f"{identities(tenant.project_id)}/{created['identityId']}")).status == 204
    assert_problem(await http.post(RENEW, {"accessToken": viewer.token}), 401)


@pytest.mark.parametrize("token", ["not-a-token", "kms_at_" + "A" * 43], ids=["malformed", "unknown"])
async def test_token_renew_of_a_malformed_or_unknown_token_is_401(http: ApiClient, token: str) -> None:
    assert_problem(await http.post(RENEW, {"accessToken": token}), 401)


async def test_token_renew_without_a_token_is_422_naming_the_field(http: ApiClient) -> None:
    r = await http.post(RENEW, {})
    assert_problem(r, 422)
    assert [e["field"] for e in r.body["errors"]] == ["accessToken"], r.body


async def test_a_token_cached_by_another_api_process_stops_working_when_its_identity_is_deleted(
        stack: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    """Tokens are cached per API process (shared.access.TokenCache); a deletion's NOTIFY drops them in
    every process, so a second API that has just served the token refuses it within moments."""
    viewer, created = await tenant.identity("viewer")
    path = identities(tenant.project_id)  # a viewer is authenticated, then refused (403): enough here
    other_url = await asyncio.to_thread(stack.start_api, name="api-token-cache")
    try:
        other = ApiClient(viewer.session, other_url, viewer.token)
        assert (await other.get(path)).status == 403  # looked up, and now cached in that process
        # The answer comes from the cache: in the database the token has expired, yet it is still served.
        digest = token_digest(viewer.token or "")
        await db.execute("UPDATE access_tokens SET expires_at = now() - interval '1 second'"
                         " WHERE token_digest = $1", digest)
        assert (await other.get(path)).status == 403
        assert (await viewer.get(path)).status == 401  # the session's API had never cached it
        await db.execute("UPDATE access_tokens SET expires_at = now() + interval '1 hour' WHERE token_digest = $1",
                         digest)
        d = await tenant.admin.delete(f"{identities(tenant.project_id)}/{created['identityId']}")
        assert d.status == 204
        deadline = time.monotonic() + 2
        while (r := await other.get(path)).status != 401:
            assert r.status == 403
            assert time.monotonic() < deadline, "the other process still accepts the deleted identity's token"
            await asyncio.sleep(0.01)
        assert r.is_problem()
    finally:
        await asyncio.to_thread(stack.stop, "api-token-cache")
