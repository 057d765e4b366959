"""Bad input that once got a 500 (found by fuzzing the API with schemathesis): each now gets a clear 4xx
problem+json and writes nothing (DESIGN.md section 5)."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import pytest

from tests.api_client import Tenant, assert_problem
from tests.issuance.issuing import server_key_attributes
from tests.pki_setup import CA, ISSUE, OPEN_POLICY, POLICIES, PROFILES, REQUESTS, make_pki
from tests.stack import Stack

BATCHES = "/api/v1/cert-manager/certificate-batches"
PROJECT_TABLES = ("identities", "audit_events", "certificate_authorities", "certificate_policies",
                  "certificate_profiles", "certificate_requests", "certificates", "certificate_batches")
# Past datetime.max once in UTC (a valid RFC 3339 timestamp all the same), and before datetime.min.
PAST_YEAR_9999 = "9999-12-31T23:59:59-14:00"
BEFORE_YEAR_1 = "0001-01-01T00:00:00+14:00"


async def written(db: asyncpg.Connection, project_id: str) -> dict[str, int]:
    """The project's rows in every table a request could write, and the tables without a project."""
    counts = {t: await db.fetchval(f"SELECT count(*) FROM {t} WHERE project_id = $1::uuid", project_id)
              for t in PROJECT_TABLES}
    counts["projects"] = await db.fetchval("SELECT count(*) FROM projects")
    counts["access_tokens"] = await db.fetchval(
        "SELECT count(*) FROM access_tokens t JOIN identities i ON i.id = t.identity_id"
        " WHERE i.project_id = $1::uuid", project_id)
    return counts


def identities(t: Tenant) -> str:
    return f"/api/v1/projects/{t.project_id}/identities"


async def test_deleting_a_profile_with_certificate_requests_is_409(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    # Issued before counting (?wait), so the worker writes nothing while the delete is judged.
    submitted = await tenant.admin.post(ISSUE + "?wait=10", {"profileId": pki.profile_id,
                                                         "attributes": server_key_attributes("a.example.test")})
    assert submitted.status == 200, submitted.body
    before = await written(db, tenant.project_id)

    r = await tenant.admin.delete(f"{PROFILES}/{pki.profile_id}")

    assert_problem(r, 409)
    assert (await tenant.admin.get(f"{PROFILES}/{pki.profile_id}")).status == 200
    after = await written(db, tenant.project_id)
    assert after == before


NUL_CASES: dict[str, tuple[str, Any]] = {
    "identity-name": ("identities", {"name": "a\x00b", "role": "viewer"}),
    "policy-description": (POLICIES, {"name": "nul", "description": "a\x00b"}),
    "policy-pattern": (POLICIES, {"name": "nul", "subject": [{"type": "common_name", "allowed": ["a\x00"]}]}),
    "login-client-id": ("/api/v1/auth/universal-auth/login", {"clientId": "a\x00b", "clientSecret": "x"}),
    "batch-item-key": (BATCHES, {"items": [{"a\x00": 1}]}),
    "batch-item-csr": (BATCHES, {"items": [{"csr": "\x00"}]}),
}


@pytest.mark.parametrize("case", list(NUL_CASES))
async def test_nul_character_in_a_json_string_is_400(
    case: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    path, body = NUL_CASES[case]
    if path == "identities":
        path = identities(tenant)
    elif path == POLICIES:
        body = {"projectId": tenant.project_id, **body}
    elif path == BATCHES:  # a real profile, so the items are evaluated (and were once stored)
        body = {"profileId": (await make_pki(tenant.admin, tenant.project_id)).profile_id, **body}
    before = await written(db, tenant.project_id)

    r = await tenant.admin.post(path, body)

    assert_problem(r, 400)
    assert "NUL" in str(r.body["errors"]), r.body
    assert await written(db, tenant.project_id) == before


async def test_lone_surrogate_in_a_batch_item_is_400(worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await written(db, tenant.project_id)

    r = await tenant.admin.post(BATCHES, {"profileId": pki.profile_id, "items": [{"csr": "\ud800"}]})

    assert_problem(r, 400)
    assert r.body["errors"] == [{"field": "items[0].csr",
                                 "message": "must not contain a NUL character or a lone surrogate"}], r.body
    assert await written(db, tenant.project_id) == before


async def test_nul_character_in_a_profile_slug_is_404(tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await written(db, tenant.project_id)

    r = await tenant.admin.get(f"{PROFILES}/slug/a%00b")

    assert_problem(r, 404)
    assert await written(db, tenant.project_id) == before


async def test_integer_of_more_than_4300_digits_is_400(tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await written(db, tenant.project_id)

    r = await tenant.admin.request("POST", identities(tenant), headers={"Content-Type": "application/json"},
                                   data=b'{"name": "x", "role": "viewer", "n": ' + b"1" * 5000 + b"}")

    assert_problem(r, 400)
    assert await written(db, tenant.project_id) == before


async def test_json_nested_deeper_than_the_parser_goes_is_400(tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await written(db, tenant.project_id)

    r = await tenant.admin.request("POST", identities(tenant), headers={"Content-Type": "application/json"},
                                   data=b"[" * 100_000 + b"]" * 100_000)

    assert_problem(r, 400)
    assert await written(db, tenant.project_id) == before


async def test_ca_not_after_past_year_9999_in_utc_is_422(tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await written(db, tenant.project_id)

    r = await tenant.admin.post(CA, {"projectId": tenant.project_id, "name": "far",
                                     "configuration": {"type": "root", "commonName": "Far Root",
                                                       "keyAlgorithm": "EC_prime256v1", "notAfter": PAST_YEAR_9999}})

    assert_problem(r, 422)
    assert [e["field"] for e in r.body["errors"]] == ["configuration.notAfter"], r.body
    assert await written(db, tenant.project_id) == before


WINDOWS = {
    "not-after-past-9999": ("2026-01-01T00:00:00Z", PAST_YEAR_9999, "notAfter"),
    "not-before-before-1": (BEFORE_YEAR_1, "2026-01-01T00:00:00Z", "notBefore"),
}


@pytest.mark.parametrize("case", list(WINDOWS))
async def test_validity_window_outside_years_1_to_9999_in_utc_is_422(
    case: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    not_before, not_after, field = WINDOWS[case]
    pki = await make_pki(tenant.admin, tenant.project_id)
    attributes = server_key_attributes("a.example.test", notBefore=not_before, notAfter=not_after)
    before = await written(db, tenant.project_id)

    r = await tenant.admin.post(ISSUE, {"profileId": pki.profile_id, "attributes": attributes})

    assert_problem(r, 422)
    assert [e["field"] for e in r.body["errors"]] == [f"attributes.{field}"], r.body
    assert await written(db, tenant.project_id) == before


@pytest.mark.parametrize("case", list(WINDOWS))
async def test_batch_item_with_validity_outside_years_1_to_9999_in_utc_fails_alone(
    case: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    """A batch item is validated on its own: a bad one is a failed item (not a 500), and no key is made."""
    not_before, not_after, field = WINDOWS[case]
    pki = await make_pki(tenant.admin, tenant.project_id)
    attributes = server_key_attributes("a.example.test", notBefore=not_before, notAfter=not_after)

    r = await tenant.admin.post(BATCHES, {"profileId": pki.profile_id, "items": [{"attributes": attributes}]})

    assert r.status == 202, r.body
    assert r.body["failedAtSubmission"] == 1, r.body
    items = await tenant.admin.get(f"{BATCHES}/{r.body['batchId']}/items")
    assert items.status == 200, items.body
    [item] = items.body["items"]
    assert item["status"] == "failed" and field in item["errorMessage"], item
    assert await db.fetchval("SELECT count(*) FROM certificates WHERE project_id = $1::uuid",
                             tenant.project_id) == 0


@pytest.mark.parametrize("moment", [PAST_YEAR_9999, BEFORE_YEAR_1])
async def test_request_list_cursor_outside_years_1_to_9999_in_utc_is_400(
    moment: str, tenant: Tenant, db: asyncpg.Connection
) -> None:
    cursor = base64.urlsafe_b64encode(f"{moment}|{tenant.project_id}".encode()).decode().rstrip("=")
    before = await written(db, tenant.project_id)

    r = await tenant.admin.get(REQUESTS, params={"projectId": tenant.project_id, "cursor": cursor})

    assert_problem(r, 400)
    assert [e["field"] for e in r.body["errors"]] == ["cursor"], r.body
    assert await written(db, tenant.project_id) == before


async def self_signed_profile(t: Tenant, **fields: Any) -> str:
    """A policy and a ``self-signed`` profile (no CA, so no worker needed): the profile's id."""
    policy = await t.admin.post(POLICIES, {"projectId": t.project_id, "name": "free-form", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    profile = await t.admin.post(PROFILES, {
        "projectId": t.project_id, "slug": "free-form", "issuerType": "self-signed", "enrollmentType": "api",
        "certificatePolicyId": policy.body["certificatePolicy"]["id"], "apiConfig": {"autoRenew": False},
        **fields})
    assert profile.status == 201, profile.body
    profile_id: str = profile.body["certificateProfile"]["id"]
    return profile_id


# Not JSON numbers (RFC 8259), though Python's json module reads them: jsonb refused them with a 500.
NON_FINITE = {"nan": b"NaN", "infinity": b"Infinity", "minus-infinity": b"-Infinity",
              "past-the-double-range": b"1e400"}


@pytest.mark.parametrize("case", list(NON_FINITE))
async def test_nan_infinity_or_a_number_past_the_double_range_in_a_json_body_is_400(
    case: str, tenant: Tenant, db: asyncpg.Connection
) -> None:
    profile_id = await self_signed_profile(tenant)
    stored = (await tenant.admin.get(f"{PROFILES}/{profile_id}")).body
    before = await written(db, tenant.project_id)

    r = await tenant.admin.request("PATCH", f"{PROFILES}/{profile_id}", headers={"Content-Type": "application/json"},
                                   data=b'{"externalConfigs": {"a": [' + NON_FINITE[case] + b"]}}")

    assert_problem(r, 400)
    assert [e["field"] for e in r.body["errors"]] == ["externalConfigs.a[0]"], r.body
    assert await written(db, tenant.project_id) == before
    assert (await tenant.admin.get(f"{PROFILES}/{profile_id}")).body == stored


# Each came back from jsonb as an integer past 64 bits: the PATCH answered 500, and so did every later
# read of the profile and of the project's profile list (found by schemathesis with real ids).
BEYOND_64_BITS = {"integer": b"18446744073709551616", "negative-integer": b"-160580341360003035168768",
                  "float": b"7.240048057155819e+73", "exponent": b"1e30"}


@pytest.mark.parametrize("case", list(BEYOND_64_BITS))
async def test_external_configs_number_beyond_64_bits_is_422_and_the_profile_still_reads(
    case: str, tenant: Tenant, db: asyncpg.Connection
) -> None:
    profile_id = await self_signed_profile(tenant, externalConfigs={"kept": {"n": -(2**63), "m": 2**63 - 1}})
    stored = (await tenant.admin.get(f"{PROFILES}/{profile_id}")).body
    before = await written(db, tenant.project_id)

    r = await tenant.admin.request("PATCH", f"{PROFILES}/{profile_id}", headers={"Content-Type": "application/json"},
                                   data=b'{"externalConfigs": {"x": {"y": ' + BEYOND_64_BITS[case] + b"}}}")

    assert_problem(r, 422)
    assert r.body["error"] == "ValidationFailure" and [e["field"] for e in r.body["errors"]] == ["externalConfigs"]
    assert await written(db, tenant.project_id) == before
    got = await tenant.admin.get(f"{PROFILES}/{profile_id}")
    assert got.status == 200 and got.body == stored, got.body
    assert stored["certificateProfile"]["externalConfigs"] == {"kept": {"n": -(2**63), "m": 2**63 - 1}}
    listed = await tenant.admin.get(PROFILES, params={"projectId": tenant.project_id})
    assert listed.status == 200, listed.body


async def test_external_configs_number_beyond_64_bits_on_create_is_422_and_writes_nothing(
    tenant: Tenant, db: asyncpg.Connection
) -> None:
    policy = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": "free-form", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    before = await written(db, tenant.project_id)

    r = await tenant.admin.post(PROFILES, {
        "projectId": tenant.project_id, "slug": "big", "issuerType": "self-signed", "enrollmentType": "api",
        "certificatePolicyId": policy.body["certificatePolicy"]["id"], "apiConfig": {"autoRenew": False},
        "externalConfigs": {"n": 1e30}})

    assert_problem(r, 422)
    assert await written(db, tenant.project_id) == before
