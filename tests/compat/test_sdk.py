"""The official SDKs against the running service: the real Python package, and the Node SDK's renew call.

Python: ``infisicalsdk==1.0.18`` from PyPI (Infisical/python-sdk-official), run as it is, not replayed:
- ``resources/auth_methods/universal_auth.py``: ``login`` posts ``{"clientId", "clientSecret"}`` as JSON to
  ``/api/v1/auth/universal-auth/login`` and builds ``MachineIdentityLoginResponse`` (``api_types.py``)
  from the answer: ``accessToken: str, expiresIn: int, accessTokenMaxTTL: int, tokenType: str``, each
  one required (``BaseModel.from_dict`` passes them to the dataclass), then sends
  ``Authorization: Bearer <accessToken>`` on every later call;
- ``infisical_requests.py``: any 4xx/5xx raises ``APIError(message=body.get("message", "Unknown error"),
  status_code, response=body)``, whose text is ``"<message> (Status: <code>)"``: without ``message`` a
  user reads "Unknown error".
Node: Infisical/node-sdk-v2 ``src/custom/auth.ts`` ``renewToken`` and ``src/api/endpoints/auth.ts``:
``POST api/v1/auth/token/renew {"accessToken"}`` on the logged-in client (so *with* the Bearer header,
where the KMS agent sends none), reading ``accessToken`` and ``expiresIn``.

The error bodies (DESIGN.md 5.1) must carry what each kind of client reads: upstream's ``message``,
``reqId``, ``statusCode``, ``error`` and problem+json's ``type``, ``title``, ``status``, ``detail``.
The SDK only ever sends well-formed JSON, so the malformed-JSON 400 is sent with plain aiohttp.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from infisical_sdk import InfisicalSDKClient
from infisical_sdk.infisical_requests import APIError

from tests.api_client import ApiClient, Reply, assert_problem, login
from tests.compat.project import CERTIFICATES, PROFILES, CompatPki, Project


@pytest.fixture
def sdk(api_url: str) -> Iterator[Any]:
    with InfisicalSDKClient(host=api_url, cache_ttl=None) as client:
        yield client


def assert_upstream_error(body: Any, status: int) -> None:
    """The one error body both kinds of client read (DESIGN.md 5.1)."""
    assert isinstance(body, dict), body
    assert body.get("statusCode") == status and body.get("status") == status, body
    for key in ("message", "reqId", "error", "type", "title", "detail"):
        assert isinstance(body.get(key), str) and body[key], (key, body)
    assert body["reqId"] == body.get("requestId"), body
    assert "Traceback" not in str(body), body


def assert_problem_reply(r: Reply, status: int) -> None:
    """The tests' problem assertion, and upstream's error fields as the SDK reads them."""
    assert_problem(r, status)
    assert_upstream_error(r.body, status)


async def sdk_error(call: Any, *args: Any, **kwargs: Any) -> APIError:
    """Run one blocking SDK call off the event loop; it must raise the SDK's APIError."""
    try:
        await asyncio.to_thread(call, *args, **kwargs)
    except APIError as err:
        return err
    raise AssertionError("the SDK call succeeded")


def assert_sdk_shows_the_reason(err: APIError, status: int) -> None:
    assert err.status_code == status, (err.status_code, err.response)
    assert_upstream_error(err.response, status)
    assert str(err) == f"{err.response['message']} (Status: {status})", str(err)


async def sdk_login(sdk: Any, project: Project) -> Any:
    return await asyncio.to_thread(sdk.auth.universal_auth.login, project.client_id, project.client_secret)


# -- login -----------------------------------------------------------------------------------------------


async def test_infisicalsdk_universal_auth_login_parses_every_login_field(sdk: Any, compat_project: Project) -> None:
    answer = await sdk_login(sdk, compat_project)
    assert isinstance(answer.accessToken, str) and answer.accessToken
    assert isinstance(answer.expiresIn, int) and answer.expiresIn > 0
    assert isinstance(answer.accessTokenMaxTTL, int) and answer.accessTokenMaxTTL >= answer.expiresIn
    assert answer.tokenType == "Bearer"
    assert sdk.api.session.headers["Authorization"] == f"Bearer {answer.accessToken}"


async def test_infisicalsdk_session_after_login_is_accepted_by_the_cert_manager_api(
        sdk: Any, compat_project: Project) -> None:
    await sdk_login(sdk, compat_project)
    listed = await asyncio.to_thread(sdk.api.get, PROFILES, model=dict, params={"projectId": compat_project.id})
    assert listed.status_code == 200, listed
    assert isinstance(listed.data["certificateProfiles"], list) and isinstance(listed.data["totalCount"], int)


async def test_infisicalsdk_login_with_a_wrong_secret_raises_api_error_with_the_services_message(
        sdk: Any, compat_project: Project) -> None:
    err = await sdk_error(sdk.auth.universal_auth.login, compat_project.client_id, "not-the-secret")
    assert_sdk_shows_the_reason(err, 401)


# -- token renew as the Node SDK sends it ----------------------------------------------------------------


async def test_node_sdk_token_renew_with_the_bearer_header_and_the_token_in_the_body_answers_a_working_token(
        http: ApiClient, compat_project: Project) -> None:
    token = await login(http, compat_project.client_id, compat_project.client_secret)
    r = await http.with_token(token).post("/api/v1/auth/token/renew", {"accessToken": token})
    assert r.status == 200, r.body
    assert isinstance(r.body["accessToken"], str) and r.body["accessToken"], r.body
    assert isinstance(r.body["expiresIn"], int) and r.body["expiresIn"] > 0, r.body
    listed = await http.with_token(r.body["accessToken"]).get(PROFILES, params={"projectId": compat_project.id})
    assert listed.status == 200, listed.body


# -- error bodies ----------------------------------------------------------------------------------------


async def test_error_body_of_malformed_json_is_a_400_with_upstream_and_problem_fields(
        http: ApiClient, compat_project: Project) -> None:
    token = await login(http, compat_project.client_id, compat_project.client_secret)
    r = await http.with_token(token).request("POST", CERTIFICATES, data='{"profileId": ',
                                             headers={"Content-Type": "application/json"})
    assert_problem_reply(r, 400)


async def test_error_body_of_an_issue_outside_the_policy_is_a_400_with_every_reason_in_message(
        sdk: Any, compat_pki: CompatPki) -> None:
    await sdk_login(sdk, compat_pki.project)
    err = await sdk_error(sdk.api.post, CERTIFICATES, model=dict, json={
        "profileId": compat_pki.profile_id,
        "attributes": {"commonName": "first.example.org", "ttl": "1d",
                       "altNames": [{"type": "dns_name", "value": "second.example.org"}]}})
    assert_sdk_shows_the_reason(err, 400)
    assert "first.example.org" in err.response["message"] and "second.example.org" in err.response["message"]
    assert len(err.response["errors"]) >= 2, err.response


async def test_error_body_of_an_unknown_certificate_is_a_404_with_upstream_and_problem_fields(
        sdk: Any, compat_project: Project) -> None:
    await sdk_login(sdk, compat_project)
    err = await sdk_error(sdk.api.get, f"{CERTIFICATES}/{uuid.uuid4()}", model=dict)
    assert_sdk_shows_the_reason(err, 404)


async def test_error_body_of_a_bad_uuid_in_the_path_is_a_422_validation_failure(
        sdk: Any, compat_project: Project) -> None:
    await sdk_login(sdk, compat_project)
    err = await sdk_error(sdk.api.get, f"{CERTIFICATES}/not-a-uuid", model=dict)
    assert_sdk_shows_the_reason(err, 422)
    assert err.response["error"] == "ValidationFailure", err.response


async def test_error_body_of_a_field_of_the_wrong_type_is_a_422_validation_failure_naming_the_field(
        sdk: Any, compat_project: Project) -> None:
    await sdk_login(sdk, compat_project)
    err = await sdk_error(sdk.api.post, CERTIFICATES, model=dict, json={"profileId": 12345})
    assert_sdk_shows_the_reason(err, 422)
    assert err.response["error"] == "ValidationFailure", err.response
    assert any("profileId" in e["field"] for e in err.response["errors"]), err.response
