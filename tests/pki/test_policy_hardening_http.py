"""Issue 8, items 1, 2 and 10 (weak keys) over HTTP on the real stack: a policy bypass refused as a
problem naming the rule in ``errors[]``, with nothing stored; a policy that could fail open
refused when it is saved; a weak CSR key refused naming the ``csr`` field."""

from __future__ import annotations

import math
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.api_client import Reply, Tenant
from tests.issuance.csrs import make_csr
from tests.issuance.issuing import rows_of_project, submit
from tests.pki.authorities import POLICIES, problem_fields
from tests.pki.storage import fingerprint
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack

# The policy (every name under example.com but prod.example.com), with an IP rule that denies
# 10.0.0.0/8 and a common-name rule that denies prod.* too.
HARDENED_POLICY: dict[str, Any] = {
    "subject": [{"type": "common_name", "allowed": ["*.example.com"], "denied": ["prod.*"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.com"], "denied": ["prod.example.com"]},
             {"type": "ip_address", "allowed": ["*"], "denied": ["10.0.0.0/8"]}],
    "extendedKeyUsages": {"allowed": ["server_auth"]},
    "validity": {"max": "90d"},
}


async def hardened_pki(tenant: Tenant) -> Pki:
    return await make_pki(tenant.admin, tenant.project_id, policy=HARDENED_POLICY)


def error_messages(r: Reply) -> dict[str, str]:
    assert r.is_problem(), (r.status, r.body)
    return {e["field"]: e["message"] for e in r.body["errors"]}


# Both are 400 (DESIGN.md 5.1), told apart by the problem type: a request the policy refuses is a
# policy-violation; a CSR that cannot be used at all is a bad request.
POLICY_VIOLATION = "policy-violation"
BAD_REQUEST = "bad-request"


async def refused(tenant: Tenant, pki: Pki, db: asyncpg.Connection, kind: str, **request: Any
                  ) -> dict[str, str]:
    """Submit; assert a 400 problem of the ``kind`` given that stored nothing; return its errors by field."""
    r = await submit(tenant.admin, pki.profile_id, wait=5, **request)
    assert r.status == 400 and r.body["type"].endswith(f"/{kind}"), (r.status, r.body)
    assert await rows_of_project(db, tenant.project_id) == {"certificate_requests": 0, "certificates": 0}
    return error_messages(r)


WILDCARD_ONLY: dict[str, Any] = {"altNames": [{"type": "dns_name", "value": "*.example.com"}]}


# -- item 1: wildcards ----------------------------------------------------------------------------

async def test_wildcard_san_covering_a_denied_name_is_refused_naming_the_denial(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await hardened_pki(tenant)

    errors = await refused(tenant, pki, db, POLICY_VIOLATION, attributes=WILDCARD_ONLY)

    assert errors == {"attributes.altNames[0]": "dns_name '*.example.com' is a wildcard covering names that match "
                                                "denied pattern 'prod.example.com'"}


async def test_policy_forbidding_wildcards_refuses_a_wildcard_san(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    policy = {**HARDENED_POLICY, "sans": [{"type": "dns_name", "allowed": ["*.example.com"], "allowWildcards": False}]}
    pki = await make_pki(tenant.admin, tenant.project_id, policy=policy)

    errors = await refused(tenant, pki, db, POLICY_VIOLATION, attributes=WILDCARD_ONLY)

    assert list(errors) == ["attributes.altNames[0]"] and "allowWildcards: false" in errors["attributes.altNames[0]"]


# -- item 2: case and form tricks -----------------------------------------------------------------

async def test_upper_case_common_name_is_refused_by_a_lower_case_denial(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await hardened_pki(tenant)

    errors = await refused(tenant, pki, db, POLICY_VIOLATION, attributes={
        "commonName": "PROD.example.com", "altNames": [{"type": "dns_name", "value": "api.example.com"}]})

    assert errors == {"attributes.commonName": "common_name 'PROD.example.com' matches denied pattern 'prod.*'"}


async def test_ipv4_mapped_ipv6_address_is_refused_by_an_ipv4_denial(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await hardened_pki(tenant)

    errors = await refused(tenant, pki, db, POLICY_VIOLATION, attributes={
        "commonName": "api.example.com", "altNames": [{"type": "dns_name", "value": "api.example.com"},
                                                      {"type": "ip_address", "value": "::ffff:10.0.0.1"}]})

    assert list(errors) == ["attributes.altNames[1]"]
    assert "matches denied pattern '10.0.0.0/8'" in errors["attributes.altNames[1]"]


async def test_names_clear_of_the_denials_are_accepted_under_the_same_policy(
    worker: Stack, tenant: Tenant
) -> None:
    # The control: the policy above refuses what it denies, not everything.
    pki = await hardened_pki(tenant)

    r = await submit(tenant.admin, pki.profile_id, attributes={
        "commonName": "api.example.com", "altNames": [{"type": "dns_name", "value": "api.example.com"},
                                                      {"type": "ip_address", "value": "::ffff:192.168.0.1"}]})

    assert r.status in (201, 202), r.body


async def test_policy_with_an_unreadable_cidr_is_422_when_created_and_writes_nothing(
    tenant: Tenant, db: asyncpg.Connection
) -> None:
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(POLICIES, {
        "projectId": tenant.project_id, "name": "typo",
        "sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["10.0.0.0/33"]}]})

    assert r.status == 422 and problem_fields(r) == {"sans[0].denied"}, r.body
    assert "'10.0.0.0/33'" in error_messages(r)["sans[0].denied"]
    assert await fingerprint(db, tenant.project_id) == before


async def test_policy_patch_with_an_unreadable_cidr_is_422_and_leaves_the_policy_as_it_was(
    tenant: Tenant, db: asyncpg.Connection
) -> None:
    created = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": "ips", **HARDENED_POLICY})
    assert created.status == 201, created.body
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.patch(f"{POLICIES}/{created.body['certificatePolicy']['id']}", {
        "sans": [{"type": "ip_address", "allowed": ["10.0.0.0-10.255.255.255"]}]})

    assert r.status == 422 and problem_fields(r) == {"sans[0].allowed"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


# -- item 10: weak CSR keys -----------------------------------------------------------------------

def _csr(key: rsa.RSAPrivateKey) -> str:
    return make_csr(key, cn="api.example.com")


async def test_csr_with_rsa_public_exponent_3_is_400_naming_the_csr_field(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await hardened_pki(tenant)
    weak = rsa.generate_private_key(public_exponent=3, key_size=2048)

    errors = await refused(tenant, pki, db, BAD_REQUEST, csr=_csr(weak))

    assert list(errors) == ["csr"] and "RSA public exponent 3 is refused" in errors["csr"]


async def test_csr_whose_rsa_modulus_has_a_small_factor_is_400_naming_the_csr_field(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await hardened_pki(tenant)
    # A real key pair whose modulus is 751 times a 2038-bit prime: it signs its CSR like any other.
    q: int = rsa.generate_private_key(public_exponent=65537, key_size=4076).private_numbers().p
    e, p = 65537, 751
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    key = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                rsa.RSAPublicNumbers(e, p * q)).private_key()

    errors = await refused(tenant, pki, db, BAD_REQUEST, csr=_csr(key))

    assert list(errors) == ["csr"] and "divisible by 751" in errors["csr"]
