"""The CA routes speak upstream's wire contract (DESIGN.md 5.3): the ``configuration`` body in, the CA bare
out, a bare array for the list, ``pending-certificate`` while the key is being made, the CA certificate
versions, and DELETE refused while anything still uses the CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cryptography import x509

from tests.api_client import Tenant
from tests.pki.authorities import CAS, ca_body, ca_certificate, create_ca, list_cas, problem_fields, wait_until_settled
from tests.pki.storage import fingerprint
from tests.pki_setup import make_pki

pytestmark = pytest.mark.usefixtures("worker")

VIEW_KEYS = {"id", "projectId", "type", "name", "status", "configuration", "errorMessage", "createdAt", "updatedAt"}
CONFIGURATION_KEYS = {"type", "parentCaId", "commonName", "organization", "ou", "country", "province", "locality",
                      "keyAlgorithm", "maxPathLength", "dn", "serialNumber", "notBefore", "notAfter",
                      "activeCaCertId"}


async def test_created_root_ca_is_answered_bare_with_its_configuration_dn_serial_and_validity(
        tenant: Tenant) -> None:
    not_after = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)
    body = {"projectId": tenant.project_id, "name": "upstream-root", "status": "active", "configuration": {
        "type": "root", "commonName": "Upstream Root", "organization": "Hanzo Test", "ou": "PKI", "country": "US",
        "province": "California", "locality": "San Francisco", "keyAlgorithm": "EC_prime256v1",
        "maxPathLength": -1, "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    r = await tenant.admin.post(CAS, body)

    assert r.status == 201, r.body
    ca = r.body
    assert set(ca) == VIEW_KEYS and set(ca["configuration"]) == CONFIGURATION_KEYS, ca
    assert (ca["type"], ca["name"], ca["status"], ca["projectId"]) == ("internal", "upstream-root", "active",
                                                                      tenant.project_id)
    config = ca["configuration"]
    for field in ("type", "commonName", "organization", "ou", "country", "province", "locality", "keyAlgorithm"):
        assert config[field] == body["configuration"][field], field  # type: ignore[index]
    assert config["parentCaId"] is None and config["maxPathLength"] == -1
    assert config["activeCaCertId"] == ca["id"]
    cert = x509.load_pem_x509_certificate((await ca_certificate(tenant.admin, ca["id"]))[0].encode())
    assert config["dn"] == cert.subject.rfc4514_string()
    assert config["serialNumber"] == format(cert.serial_number, "x")
    assert datetime.fromisoformat(config["notAfter"]) == not_after == cert.not_valid_after_utc
    assert datetime.fromisoformat(config["notBefore"]) == cert.not_valid_before_utc
    assert (await tenant.admin.get(f"{CAS}/{ca['id']}")).body == ca


async def test_ca_list_is_a_bare_array_of_the_projects_cas_oldest_first(tenant: Tenant) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "listed root"))
    child = await create_ca(tenant.admin, ca_body(tenant.project_id, "listed child", parent=root["id"]))

    listed = await list_cas(tenant.admin, tenant.project_id)

    assert isinstance(listed, list)
    assert [ca["id"] for ca in listed] == [root["id"], child["id"]]
    assert listed[1]["configuration"]["parentCaId"] == root["id"]


async def test_ca_created_disabled_gets_its_certificate_and_stays_disabled(tenant: Tenant) -> None:
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "born disabled", status="disabled"))

    assert ca["status"] == "disabled", ca
    assert ca["configuration"]["serialNumber"] is not None
    pem, _ = await ca_certificate(tenant.admin, ca["id"])
    assert x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.BasicConstraints).value.ca


async def test_ca_whose_key_is_still_being_made_is_202_pending_certificate_then_active(tenant: Tenant) -> None:
    # An RSA 4096 key takes the worker far longer than the no-wait answer (?wait=0, an extension).
    r = await tenant.admin.post(CAS, ca_body(tenant.project_id, "slow key", key_algorithm="RSA_4096"),
                                params={"wait": "0"})

    assert r.status == 202, r.body
    assert r.body["status"] == "pending-certificate", r.body
    assert r.body["configuration"]["serialNumber"] is None and r.body["configuration"]["activeCaCertId"] is None
    assert r.headers["Location"].endswith(f"{CAS}/{r.body['id']}") and "Retry-After" in r.headers
    assert (await wait_until_settled(tenant.admin, r.body["id"]))["status"] == "active"


async def test_ca_with_max_path_length_minus_one_has_no_path_length_constraint(tenant: Tenant) -> None:
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "unlimited", maxPathLength=-1))

    pem, _ = await ca_certificate(tenant.admin, ca["id"])
    constraints = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length is None
    assert ca["configuration"]["maxPathLength"] == -1


@pytest.mark.parametrize("name", ["Upper", "with space", "-leading", "trailing-", "double--hyphen", "under_score"])
async def test_ca_name_that_is_not_a_slug_is_422_and_nothing_is_written(
        tenant: Tenant, db: asyncpg.Connection, name: str) -> None:
    before = await fingerprint(db, tenant.project_id)
    body = ca_body(tenant.project_id, "x")
    body["name"] = name

    r = await tenant.admin.post(CAS, body)

    assert r.status == 422 and problem_fields(r) == {"name"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_ca_certificates_lists_the_cas_one_certificate_as_version_1(tenant: Tenant) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "versioned root"))
    mid = await create_ca(tenant.admin, ca_body(tenant.project_id, "versioned mid", parent=root["id"]))

    r = await tenant.admin.get(f"{CAS}/{mid['id']}/ca-certificates")

    assert r.status == 200, r.body
    pem, chain = await ca_certificate(tenant.admin, mid["id"])
    assert r.body == [{"certificate": pem, "certificateChain": chain,
                       "serialNumber": mid["configuration"]["serialNumber"], "version": 1}]


async def test_deleting_an_unused_ca_answers_it_and_removes_it(tenant: Tenant) -> None:
    keep = await create_ca(tenant.admin, ca_body(tenant.project_id, "kept"))
    doomed = await create_ca(tenant.admin, ca_body(tenant.project_id, "doomed"))

    r = await tenant.admin.delete(f"{CAS}/{doomed['id']}")

    assert r.status == 200, r.body
    assert r.body["id"] == doomed["id"] and r.body["name"] == "doomed"
    assert (await tenant.admin.get(f"{CAS}/{doomed['id']}")).status == 404
    assert [ca["id"] for ca in await list_cas(tenant.admin, tenant.project_id)] == [keep["id"]]


async def test_deleting_a_ca_that_a_child_ca_or_a_profile_uses_is_409_and_nothing_changes(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)  # root -> issuing CA -> profile
    before = await fingerprint(db, tenant.project_id)

    parent = await tenant.admin.delete(f"{CAS}/{pki.root_id}")
    issuing = await tenant.admin.delete(f"{CAS}/{pki.issuing_id}")

    assert parent.status == 409 and "child CA" in parent.body["message"], parent.body
    assert issuing.status == 409 and "profile" in issuing.body["message"], issuing.body
    assert await fingerprint(db, tenant.project_id) == before
