"""Hostile input to ``POST /api/v1/cert-manager/certificates``: each gets a clear 400, 404, 413 or 422
problem+json (never a 5xx), and none of it writes a certificate request or a certificate."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest

from tests.api_client import Tenant
from tests.api_client import assert_problem as assert_clear_problem  # one helper for every suite
from tests.issuance import csrs
from tests.issuance.issuing import MakeTenant, rows_of_project, server_key_attributes, submit
from tests.pki_setup import ISSUE, make_pki
from tests.stack import Stack

# (make the CSR, the statuses allowed, words the problem's detail must contain)
HOSTILE_CSRS: dict[str, tuple[Callable[[], str], set[int], str]] = {
    "not-pem": (lambda: "hello, I am a certificate request", {400}, "PEM"),
    "bad-base64": (csrs.with_bad_base64, {400}, "base64"),
    "signature-does-not-verify": (csrs.with_flipped_signature_bit, {400}, "signature does not verify"),
    "rsa-1024": (csrs.with_rsa_1024, {400}, "1024"),
    "dsa-key": (csrs.with_dsa_key, {400}, "DSA"),
    "p-192-key": (csrs.with_p192_key, {400}, "secp192r1"),
    "500-sans": (lambda: csrs.with_sans(500), {400}, "500 subject alternative names"),
    "malformed-san-extension": (csrs.with_malformed_san, {400}, "subjectAltName extension is malformed"),
    # The API's body limit is 1 MiB: the JSON around 1 MiB of PEM goes past it (413), or, were the limit
    # raised, the CSR's own 16 KiB limit answers (400).
    "one-mebibyte-of-pem": (csrs.one_mebibyte, {400, 413}, "bytes"),
    # Under the body limit, the CSR's own limit: at most 16 KiB of PEM.
    "half-a-mebibyte-of-pem": (lambda: csrs.pem_of(b"\x00" * (384 * 1024)), {400}, "at most 16384 bytes"),
}


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@pytest.mark.parametrize("case", list(HOSTILE_CSRS))
async def test_hostile_csr_is_a_clear_problem_and_changes_nothing(
    case: str, worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    make, statuses, words = HOSTILE_CSRS[case]
    pki = await make_pki(tenant.admin, tenant.project_id)
    csr = make()
    before = await rows_of_project(db, tenant.project_id)

    r = await submit(tenant.admin, pki.profile_id, csr=csr, wait=10)

    assert_clear_problem(r, statuses)
    assert words in r.body["detail"], r.body
    # Whatever fields are named are the CSR's (key-type refusals name none yet: the detail says it all).
    assert all(e["field"].startswith("csr") for e in r.body.get("errors", [])), r.body
    assert await rows_of_project(db, tenant.project_id) == before == {"certificate_requests": 0, "certificates": 0}


async def test_malformed_json_is_a_400_problem_and_changes_nothing(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    before = await rows_of_project(db, tenant.project_id)

    r = await tenant.admin.request("POST", ISSUE, data=f'{{"profileId": "{pki.profile_id}", "csr":'.encode(),
                                   headers={"Content-Type": "application/json"})

    assert_clear_problem(r, {400})
    assert await rows_of_project(db, tenant.project_id) == before


@pytest.mark.parametrize("body", [
    {"profileId": 5},
    {"profileId": "not-a-uuid"},
    {"profileId": None},
    {"profileId": "PROFILE", "csr": 42},
    {"profileId": "PROFILE", "attributes": "cn=app.example.test"},
    {"profileId": "PROFILE", "attributes": {"altNames": {"type": "dns_name"}}},
    {"profileId": "PROFILE", "removeRootsFromChain": "maybe"},
], ids=["profile-id-number", "profile-id-not-uuid", "profile-id-null", "csr-number", "attributes-string",
        "alt-names-object", "flag-string"])
async def test_wrong_types_are_a_422_problem_naming_the_field_and_change_nothing(
    body: dict[str, object], worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    sent = {k: pki.profile_id if v == "PROFILE" else v for k, v in body.items()}
    wrong = next(k for k, v in body.items() if v != "PROFILE")
    before = await rows_of_project(db, tenant.project_id)

    r = await tenant.admin.post(ISSUE, sent)

    assert_clear_problem(r, {422})
    assert r.body["error"] == "ValidationFailure", r.body
    assert any(e["field"].split(".")[0].split("[")[0] == wrong for e in r.body["errors"]), r.body
    assert await rows_of_project(db, tenant.project_id) == before


async def test_unknown_profile_id_is_a_404_problem(worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    r = await submit(tenant.admin, str(uuid.uuid4()), attributes=server_key_attributes("app.example.test"))

    assert_clear_problem(r, {404})
    assert [e["field"] for e in r.body["errors"]] == ["profileId"]
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}


async def test_another_projects_profile_id_is_a_404_problem_like_an_unknown_one(
    worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    owner: Tenant = await make_tenant("owner")
    intruder: Tenant = await make_tenant("intruder")
    pki = await make_pki(owner.admin, owner.project_id)
    issuer, _ = await intruder.identity("issuer")

    replies = [await submit(client, pki.profile_id, attributes=server_key_attributes("app.example.test"))
               for client in (intruder.admin, issuer)]
    unknown = await submit(intruder.admin, str(uuid.uuid4()), attributes=server_key_attributes("app.example.test"))

    for r in replies:
        assert_clear_problem(r, {404})
        # Indistinguishable from a profile that does not exist: the id does not leak.
        assert (r.body["title"], r.body["detail"], r.body["errors"]) == \
            (unknown.body["title"], unknown.body["detail"], unknown.body["errors"])
    for tenant in (owner, intruder):
        assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}


async def test_request_breaking_three_policy_rules_is_one_400_naming_all_three(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    attributes = {"commonName": "www.evil.org", "altNames": [{"type": "dns_name", "value": "app.example.test"},
                                                              {"type": "dns_name", "value": "mail.evil.org"}],
                  "ttl": "365d"}

    r = await submit(tenant.admin, pki.profile_id, attributes=attributes, wait=10)

    assert_clear_problem(r, {400})
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert {e["field"] for e in r.body["errors"]} == {"attributes.commonName", "attributes.altNames[1]",
                                                      "attributes.ttl"}, r.body
    detail = r.body["detail"]
    assert "www.evil.org" in detail and "mail.evil.org" in detail and "90d" in detail, detail
    assert r.body["message"] == detail, r.body  # upstream's clients show every violation, joined
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}
