"""Certificate policies and certificate profiles over HTTP (DESIGN.md section 5): create, read, list,
change and delete; the links a profile must have; conflicts; malformed input refused as a 422 problem
(400 where a rule between fields is broken) with every offending field named, before anything is written;
and unknown fields ignored (DESIGN.md 5.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from cryptography import x509

from tests.api_client import ApiClient, Reply, Tenant
from tests.issuance.issuing import issued, server_key_attributes
from tests.pki.authorities import POLICIES, PROFILES, ca_body, create_ca, problem_fields
from tests.pki.storage import fingerprint
from tests.pki_setup import make_pki
from tests.stack import Stack


def policy_body(project_id: str, name: str = "web-servers", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "projectId": project_id, "name": name, "description": "TLS for internal web servers",
        "subject": [{"type": "common_name", "allowed": ["*.svc.internal"], "required": [], "denied": []}],
        "sans": [{"type": "dns_name", "allowed": ["*.svc.internal"], "required": [], "denied": ["admin.*"]}],
        "keyUsages": {"allowed": ["digital_signature", "key_encipherment"], "required": [], "denied": []},
        "extendedKeyUsages": {"allowed": [], "required": ["server_auth"], "denied": ["code_signing"]},
        "algorithms": {"signature": ["ECDSA-SHA256"], "keyAlgorithm": ["EC_prime256v1"]},
        "validity": {"max": "90d"},
        "basicConstraints": {"isCA": "denied", "maxPathLength": None},
    }
    body.update(changes)
    return body


def profile_body(project_id: str, policy_id: str, slug: str = "web", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "projectId": project_id, "slug": slug, "description": "web servers, self-signed for now",
        "issuerType": "self-signed", "certificatePolicyId": policy_id, "enrollmentType": "api",
        "apiConfig": {"autoRenew": True, "renewBeforeDays": 30},
        "defaults": {"ttl": "30d", "keyAlgorithm": "EC_prime256v1", "keyUsages": ["digital_signature"]},
    }
    body.update(changes)
    return body


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def _policy(r: Reply) -> dict[str, Any]:
    """The policy of a one-policy answer (wrapped as upstream: ``{certificatePolicy: {...}}``)."""
    assert set(r.body) == {"certificatePolicy"}, r.body
    policy: dict[str, Any] = r.body["certificatePolicy"]
    return policy


def _profile(r: Reply) -> dict[str, Any]:
    assert set(r.body) == {"certificateProfile"}, r.body
    profile: dict[str, Any] = r.body["certificateProfile"]
    return profile


async def _create_policy(client: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(POLICIES, body)
    assert r.status == 201, r.body
    return _policy(r)


async def _create_profile(client: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(PROFILES, body)
    assert r.status == 201, r.body
    return _profile(r)


async def _policies(client: ApiClient, project_id: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get(POLICIES, params={"projectId": project_id, **params})
    assert r.status == 200 and set(r.body) == {"certificatePolicies", "totalCount"}, r.body
    listed: list[dict[str, Any]] = r.body["certificatePolicies"]
    return listed


async def _profiles(client: ApiClient, project_id: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get(PROFILES, params={"projectId": project_id, **params})
    assert r.status == 200 and set(r.body) == {"certificateProfiles", "totalCount"}, r.body
    listed: list[dict[str, Any]] = r.body["certificateProfiles"]
    return listed


# -- policies -------------------------------------------------------------------------------------


async def test_created_policy_reads_back_as_sent_and_is_listed_in_its_project(tenant: Tenant) -> None:
    sent = policy_body(tenant.project_id)

    created = await _create_policy(tenant.admin, sent)

    assert _without(created, "id", "createdAt", "updatedAt") == sent
    fetched = await tenant.admin.get(f"{POLICIES}/{created['id']}")
    assert fetched.status == 200 and _policy(fetched) == created
    assert await _policies(tenant.admin, tenant.project_id) == [created]


async def test_policy_patch_replaces_the_given_fields_and_keeps_the_rest(tenant: Tenant) -> None:
    created = await _create_policy(tenant.admin, policy_body(tenant.project_id))

    r = await tenant.admin.patch(f"{POLICIES}/{created['id']}",
                                 {"name": "web-servers-v2", "validity": {"max": "30d"}})

    assert r.status == 200, r.body
    patched = _policy(r)
    assert patched["name"] == "web-servers-v2" and patched["validity"] == {"max": "30d"}
    assert _without(patched, "name", "validity", "updatedAt") == _without(created, "name", "validity", "updatedAt")
    assert _policy(await tenant.admin.get(f"{POLICIES}/{created['id']}")) == patched


async def test_deleted_policy_is_gone(tenant: Tenant) -> None:
    created = await _create_policy(tenant.admin, policy_body(tenant.project_id))

    r = await tenant.admin.delete(f"{POLICIES}/{created['id']}")

    assert r.status == 200 and _policy(r) == created, r.body
    gone = await tenant.admin.get(f"{POLICIES}/{created['id']}")
    assert gone.status == 404 and gone.is_problem()
    assert await _policies(tenant.admin, tenant.project_id) == []
    assert (await tenant.admin.delete(f"{POLICIES}/{created['id']}")).status == 404


async def test_duplicate_policy_name_in_a_project_is_409(tenant: Tenant, db: asyncpg.Connection) -> None:
    await _create_policy(tenant.admin, policy_body(tenant.project_id, "taken"))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(POLICIES, policy_body(tenant.project_id, "taken", validity={"max": "1d"}))

    assert r.status == 409 and problem_fields(r) == {"name"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


MALFORMED_POLICIES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "unknown key usage": ({"keyUsages": {"allowed": ["digital_signature", "sign_everything"]}},
                          {"keyUsages.allowed[1]"}),
    "ttl with an unknown unit": ({"validity": {"max": "90x"}}, {"validity.max"}),
    "subject rule type listed twice": (
        {"subject": [{"type": "common_name", "allowed": ["a"]}, {"type": "common_name", "allowed": ["b"]}]},
        {"subject"}),
}


@pytest.mark.parametrize("case", MALFORMED_POLICIES)
async def test_malformed_policy_is_422_naming_the_field_and_writes_nothing(
        tenant: Tenant, db: asyncpg.Connection, case: str) -> None:
    changes, fields = MALFORMED_POLICIES[case]
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(POLICIES, policy_body(tenant.project_id, **changes))

    assert r.status == 422 and problem_fields(r) == fields, r.body
    assert await fingerprint(db, tenant.project_id) == before


@pytest.mark.parametrize("case", MALFORMED_POLICIES)
async def test_malformed_policy_patch_is_422_and_leaves_the_policy_as_it_was(
        tenant: Tenant, db: asyncpg.Connection, case: str) -> None:
    created = await _create_policy(tenant.admin, policy_body(tenant.project_id))
    changes, fields = MALFORMED_POLICIES[case]
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.patch(f"{POLICIES}/{created['id']}", changes)

    assert r.status == 422 and problem_fields(r) == fields, r.body
    assert await fingerprint(db, tenant.project_id) == before


VOLATILE = ("id", "name", "createdAt", "updatedAt")


async def test_unknown_policy_fields_are_ignored_and_not_stored(tenant: Tenant) -> None:
    plain = await _create_policy(tenant.admin, policy_body(tenant.project_id, "plain"))

    created = await _create_policy(tenant.admin, policy_body(
        tenant.project_id, "newer client", colour="blue", validity={"max": "90d", "colour": "red"}))

    read = await tenant.admin.get(f"{POLICIES}/{created['id']}")
    assert read.status == 200, read.body
    for view in (created, _policy(read)):
        assert "colour" not in str(view), view
        assert _without(view, *VOLATILE) == _without(plain, *VOLATILE)


async def test_policy_patch_of_only_unknown_fields_is_accepted_and_changes_nothing(tenant: Tenant) -> None:
    created = await _create_policy(tenant.admin, policy_body(tenant.project_id))

    r = await tenant.admin.patch(f"{POLICIES}/{created['id']}", {"colour": "blue"})

    assert r.status == 200, r.body
    read = await tenant.admin.get(f"{POLICIES}/{created['id']}")
    for view in (_policy(r), _policy(read)):
        assert "colour" not in str(view), view
        assert _without(view, "updatedAt") == _without(created, "updatedAt")


# -- profiles -------------------------------------------------------------------------------------


@pytest.fixture
async def policy(tenant: Tenant) -> dict[str, Any]:
    return await _create_policy(tenant.admin, policy_body(tenant.project_id))


async def test_created_profile_reads_back_by_id_by_slug_and_in_its_projects_list(
        tenant: Tenant, policy: dict[str, Any]) -> None:
    sent = profile_body(tenant.project_id, policy["id"])

    created = await _create_profile(tenant.admin, sent)

    assert created["caId"] is None
    assert (created["acmeConfig"], created["estConfig"], created["externalConfigs"]) == (None, None, None)
    assert _without(created, "id", "createdAt", "updatedAt", "caId", "defaults", "acmeConfig", "estConfig",
                    "externalConfigs") == _without(sent, "defaults")
    # Defaults the profile does not set read back as null.
    assert {k: v for k, v in created["defaults"].items() if v is not None} == sent["defaults"]
    by_id = await tenant.admin.get(f"{PROFILES}/{created['id']}")
    by_slug = await tenant.admin.get(f"{PROFILES}/slug/web")
    assert by_id.status == by_slug.status == 200
    assert _profile(by_id) == _profile(by_slug) == created
    assert await _profiles(tenant.admin, tenant.project_id) == [created]


async def test_profile_patch_replaces_the_given_fields_and_keeps_the_rest(
        tenant: Tenant, policy: dict[str, Any]) -> None:
    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))

    r = await tenant.admin.patch(f"{PROFILES}/{created['id']}", {"slug": "web-v2", "description": "renamed"})

    assert r.status == 200, r.body
    patched = _profile(r)
    assert (patched["slug"], patched["description"]) == ("web-v2", "renamed")
    kept = ("slug", "description", "updatedAt")
    assert _without(patched, *kept) == _without(created, *kept)
    assert _profile(await tenant.admin.get(f"{PROFILES}/slug/web-v2")) == patched
    assert (await tenant.admin.get(f"{PROFILES}/slug/web")).status == 404


async def test_deleted_profile_is_gone(tenant: Tenant, policy: dict[str, Any]) -> None:
    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))

    r = await tenant.admin.delete(f"{PROFILES}/{created['id']}")

    assert r.status == 200 and _profile(r) == created, r.body
    for path in (f"{PROFILES}/{created['id']}", f"{PROFILES}/slug/web"):
        gone = await tenant.admin.get(path)
        assert gone.status == 404 and gone.is_problem(), path
    assert await _profiles(tenant.admin, tenant.project_id) == []


async def test_profile_issued_by_an_internal_ca_names_that_ca(
        worker: Stack, tenant: Tenant, policy: dict[str, Any]) -> None:
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "profile issuer"))

    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], issuerType="ca",
                                                               caId=ca["id"]))

    assert (created["issuerType"], created["caId"]) == ("ca", ca["id"])


async def test_profile_with_issuer_type_ca_and_no_ca_id_is_400_and_writes_nothing(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(PROFILES, profile_body(tenant.project_id, policy["id"], issuerType="ca"))

    assert r.status == 400 and problem_fields(r) == {"caId"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_self_signed_profile_with_a_ca_id_is_400_and_writes_nothing(
        worker: Stack, tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "not for self-signed"))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(PROFILES, profile_body(tenant.project_id, policy["id"], caId=ca["id"]))

    assert r.status == 400 and problem_fields(r) == {"caId"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_switching_a_profile_to_issuer_type_ca_without_a_ca_id_is_400(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.patch(f"{PROFILES}/{created['id']}", {"issuerType": "ca"})

    assert r.status == 400 and problem_fields(r) == {"caId"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_policy_used_by_a_profile_cannot_be_deleted_until_the_profile_is(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    profile = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))
    before = await fingerprint(db, tenant.project_id)

    refused = await tenant.admin.delete(f"{POLICIES}/{policy['id']}")

    assert refused.status == 409 and refused.is_problem(), refused.body
    assert await fingerprint(db, tenant.project_id) == before
    assert (await tenant.admin.delete(f"{PROFILES}/{profile['id']}")).status == 200
    assert (await tenant.admin.delete(f"{POLICIES}/{policy['id']}")).status == 200


async def test_duplicate_profile_slug_in_a_project_is_409(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], slug="taken"))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(PROFILES, profile_body(tenant.project_id, policy["id"], slug="taken",
                                                       description="another"))

    assert r.status == 409 and problem_fields(r) == {"slug"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_renaming_a_profile_to_a_taken_slug_is_409(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], slug="taken"))
    other = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], slug="other"))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.patch(f"{PROFILES}/{other['id']}", {"slug": "taken"})

    assert r.status == 409 and problem_fields(r) == {"slug"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_viewer_reads_policies_and_profiles_but_gets_403_on_every_change(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    profile = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))
    viewer, _ = await tenant.identity("viewer")
    for path in (f"{POLICIES}/{policy['id']}", f"{PROFILES}/{profile['id']}", f"{PROFILES}/slug/web"):
        assert (await viewer.get(path)).status == 200, path
    before = await fingerprint(db, tenant.project_id)

    replies = [
        await viewer.post(POLICIES, policy_body(tenant.project_id, "by-viewer")),
        await viewer.patch(f"{POLICIES}/{policy['id']}", {"description": "by viewer"}),
        await viewer.delete(f"{POLICIES}/{policy['id']}"),
        await viewer.post(PROFILES, profile_body(tenant.project_id, policy["id"], slug="by-viewer")),
        await viewer.patch(f"{PROFILES}/{profile['id']}", {"description": "by viewer"}),
        await viewer.delete(f"{PROFILES}/{profile['id']}"),
    ]

    assert [r.status for r in replies] == [403] * 6, [r.body for r in replies]
    assert all(r.is_problem() for r in replies)
    assert await fingerprint(db, tenant.project_id) == before


# -- upstream's shapes (DESIGN.md 5.4, 5.5) ---------------------------------------------------------


async def test_policy_name_is_stored_slugified(tenant: Tenant) -> None:
    created = await _create_policy(tenant.admin, policy_body(tenant.project_id, "Web Servers (prod)"))

    assert created["name"] == "web-servers-prod"


async def test_policy_list_pages_with_offset_and_limit_and_counts_them_all(tenant: Tenant) -> None:
    made = [await _create_policy(tenant.admin, policy_body(tenant.project_id, f"p{i}")) for i in range(3)]

    r = await tenant.admin.get(POLICIES, params={"projectId": tenant.project_id, "offset": "1", "limit": "1"})

    assert r.status == 200, r.body
    assert (r.body["certificatePolicies"], r.body["totalCount"]) == ([made[1]], 3)


async def test_policy_list_search_matches_a_substring_of_the_name(tenant: Tenant) -> None:
    await _create_policy(tenant.admin, policy_body(tenant.project_id, "internal-web"))
    mail = await _create_policy(tenant.admin, policy_body(tenant.project_id, "mail-relays"))

    found = await _policies(tenant.admin, tenant.project_id, search="L-R")

    assert found == [mail]
    # LIKE's own wildcards in the search are plain characters.
    assert await _policies(tenant.admin, tenant.project_id, search="l_r") == []
    assert await _policies(tenant.admin, tenant.project_id, search="%") == []


@pytest.mark.parametrize("limit", ["0", "101", "x"])
async def test_list_limit_outside_1_to_100_is_422(tenant: Tenant, limit: str) -> None:
    r = await tenant.admin.get(PROFILES, params={"projectId": tenant.project_id, "limit": limit})

    assert r.status == 422 and problem_fields(r) == {"limit"}, r.body


async def test_profile_list_filters_by_enrollment_type_issuer_type_and_ca(
        worker: Stack, tenant: Tenant, policy: dict[str, Any]) -> None:
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "filter issuer"))
    api_ca = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], slug="api-ca",
                                                              issuerType="ca", caId=ca["id"]))
    api_self = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], slug="api-self"))
    acme = await _create_profile(tenant.admin, profile_body(
        tenant.project_id, policy["id"], slug="acme-self", enrollmentType="acme", apiConfig=None,
        acmeConfig={"skipDnsOwnershipVerification": True}))

    assert await _profiles(tenant.admin, tenant.project_id, enrollmentType="acme") == [acme]
    assert await _profiles(tenant.admin, tenant.project_id, issuerType="self-signed") == [api_self, acme]
    assert await _profiles(tenant.admin, tenant.project_id, caId=ca["id"]) == [api_ca]
    assert await _profiles(tenant.admin, tenant.project_id, search="API-S", enrollmentType="api") == [api_self]


async def test_profile_list_with_an_unknown_enrollment_type_is_422(tenant: Tenant) -> None:
    r = await tenant.admin.get(PROFILES, params={"projectId": tenant.project_id, "enrollmentType": "scep"})

    assert r.status == 422 and problem_fields(r) == {"enrollmentType"}, r.body


async def test_acme_profile_keeps_its_acme_config_and_has_no_api_config(
        tenant: Tenant, policy: dict[str, Any]) -> None:
    created = await _create_profile(tenant.admin, profile_body(
        tenant.project_id, policy["id"], enrollmentType="acme", apiConfig=None,
        acmeConfig={"skipDnsOwnershipVerification": True, "skipEabBinding": False}))

    assert created["enrollmentType"] == "acme" and created["apiConfig"] is None
    assert created["acmeConfig"] == {"skipDnsOwnershipVerification": True, "skipEabBinding": False}


async def test_est_profile_never_reads_back_its_passphrase(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    created = await _create_profile(tenant.admin, profile_body(
        tenant.project_id, policy["id"], enrollmentType="est", apiConfig=None,
        estConfig={"disableBootstrapCaValidation": True, "passphrase": "correct horse battery"}))

    assert created["estConfig"] == {"disableBootstrapCaValidation": True, "hasPassphrase": True, "caChain": None}
    stored = await db.fetchval("SELECT est_config::text FROM certificate_profiles WHERE id = $1",
                               UUID(created["id"]))
    assert "correct horse" not in stored and "scrypt$" in stored


ENROLLMENT_MISMATCHES: dict[str, dict[str, Any]] = {
    "api without apiConfig": {"apiConfig": None},
    "api with an acmeConfig": {"acmeConfig": {"skipEabBinding": True}},
    "acme without acmeConfig": {"enrollmentType": "acme", "apiConfig": None},
    "acme with an apiConfig": {"enrollmentType": "acme", "acmeConfig": {}},
    "est without estConfig": {"enrollmentType": "est", "apiConfig": None},
    "unknown enrollment type": {"enrollmentType": "scep"},
    "renewBeforeDays past 30": {"apiConfig": {"autoRenew": True, "renewBeforeDays": 31}},
}


@pytest.mark.parametrize("case", ENROLLMENT_MISMATCHES)
async def test_profile_whose_configs_do_not_fit_its_enrollment_type_is_422_and_writes_nothing(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection, case: str) -> None:
    body = {k: v for k, v in profile_body(tenant.project_id, policy["id"], **ENROLLMENT_MISMATCHES[case]).items()
            if v is not None}
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(PROFILES, body)

    assert r.status == 422 and r.is_problem(), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_profile_patch_with_another_enrollment_types_config_is_422(
        tenant: Tenant, policy: dict[str, Any], db: asyncpg.Connection) -> None:
    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.patch(f"{PROFILES}/{created['id']}", {"acmeConfig": {"skipEabBinding": True}})

    assert r.status == 422 and r.is_problem(), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_profile_defaults_take_upstreams_ttl_days_and_basic_constraints(
        tenant: Tenant, policy: dict[str, Any]) -> None:
    defaults = {"ttlDays": 7, "commonName": "a.svc.internal", "keyAlgorithm": "EC_prime256v1",
                "signatureAlgorithm": "ECDSA-SHA256", "keyUsages": ["digital_signature"],
                "extendedKeyUsages": ["server_auth"], "basicConstraints": {"isCA": False, "pathLength": None},
                "organization": "Hanzo", "organizationalUnit": "Web", "country": "US", "state": "CA",
                "locality": "SF"}

    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"], defaults=defaults))

    assert {k: v for k, v in created["defaults"].items() if v is not None} == defaults


async def test_certificate_issued_without_a_ttl_lasts_the_profiles_ttl_days(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)  # its profile: defaults.ttlDays 30

    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("days.example.test"))

    cert = x509.load_pem_x509_certificate(view["certificate"].encode())
    # notBefore is backdated a little for clock skew; the 30 days run from the issuing moment.
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=5), lifetime


async def test_profile_lists_its_certificates_with_their_status_and_serves_the_latest_active_bundle(
        worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    first = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("one.example.test"))
    second = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("two.example.test"))

    listed = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates")
    searched = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates",
                                      params={"search": "one.example", "status": "active"})
    expired = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates", params={"status": "expired"})
    bundle = await tenant.admin.get(f"{PROFILES}/{pki.profile_id}/certificates/latest-active-bundle")

    assert listed.status == searched.status == expired.status == bundle.status == 200
    assert [(c["id"], c["status"]) for c in listed.body["certificates"]] == [
        (second["certificateId"], "active"), (first["certificateId"], "active")]
    assert [c["id"] for c in searched.body["certificates"]] == [first["certificateId"]]
    assert expired.body["certificates"] == []
    assert bundle.body["certificateId"] == second["certificateId"]
    assert (bundle.body["certificate"], bundle.body["privateKey"]) == (second["certificate"], second["privateKey"])


async def test_latest_active_bundle_hides_the_key_from_a_viewer(worker: Stack, tenant: Tenant) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("view.example.test"))
    viewer, _ = await tenant.identity("viewer")

    bundle = await viewer.get(f"{PROFILES}/{pki.profile_id}/certificates/latest-active-bundle")

    assert bundle.status == 200 and bundle.body["certificate"] and bundle.body["privateKey"] is None, bundle.body


async def test_latest_active_bundle_of_a_profile_without_certificates_is_404(
        tenant: Tenant, policy: dict[str, Any]) -> None:
    created = await _create_profile(tenant.admin, profile_body(tenant.project_id, policy["id"]))

    r = await tenant.admin.get(f"{PROFILES}/{created['id']}/certificates/latest-active-bundle")

    assert r.status == 404 and r.is_problem(), r.body
