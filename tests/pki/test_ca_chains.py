"""Internal CA hierarchies over HTTP: every key algorithm makes root -> intermediate -> intermediate chains
that pass DigiCert's pkilint and ``openssl verify``; path length, lifetime, name, status and role rules
are enforced before anything is written (DESIGN.md sections 5 and 6)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.api_client import Tenant
from tests.issuance.checkers import openssl_verify, pkilint_errors
from tests.pki.authorities import (
    CAS,
    KEY_ALGORITHMS,
    ca_body,
    ca_certificate,
    create_ca,
    list_cas,
    problem_fields,
)
from tests.pki.storage import fingerprint

pytestmark = pytest.mark.usefixtures("worker")

# cryptography's names for the curves the API calls by their OpenSSL names.
_CURVES = {"EC_prime256v1": "secp256r1", "EC_secp384r1": "secp384r1", "EC_secp521r1": "secp521r1"}


def _has_key_algorithm(cert: x509.Certificate, algorithm: str) -> bool:
    key = cert.public_key()
    if algorithm.startswith("RSA_"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size == int(algorithm.removeprefix("RSA_"))
    if algorithm.startswith("EC_"):
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[algorithm]
    return isinstance(key, ed25519.Ed25519PublicKey)


async def _build_chain(tenant: Tenant, algorithms: tuple[str, str, str]) -> list[dict[str, Any]]:
    """root -> intermediate -> second-level intermediate, one key algorithm per level."""
    tag = "-".join(a.lower() for a in algorithms)
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, f"root {tag}", key_algorithm=algorithms[0]))
    mid = await create_ca(tenant.admin, ca_body(tenant.project_id, f"mid {tag}", parent=root["id"],
                                                key_algorithm=algorithms[1], ttl="5y"))
    leaf_ca = await create_ca(tenant.admin, ca_body(tenant.project_id, f"issuing {tag}", parent=mid["id"],
                                                    key_algorithm=algorithms[2], ttl="2y"))
    return [root, mid, leaf_ca]


async def _assert_chain_passes_checkers(tenant: Tenant, cas: list[dict[str, Any]], tmp_path: Path) -> None:
    pems = [await ca_certificate(tenant.admin, ca["id"]) for ca in cas]
    root_pem = pems[0][0]
    certs = [x509.load_pem_x509_certificate(cert.encode()) for cert, _ in pems]
    for level, (ca, cert) in enumerate(zip(cas, certs, strict=True)):
        algorithm = ca["configuration"]["keyAlgorithm"]
        assert _has_key_algorithm(cert, algorithm), (algorithm, cert.public_key())
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert format(cert.serial_number, "x") == ca["configuration"]["serialNumber"]
        if level:
            assert cert.issuer == certs[level - 1].subject
    # Each CA's chain is its issuer's certificate, then up to the root.
    assert pems[0][1] == ""
    assert x509.load_pem_x509_certificates(pems[1][1].encode()) == certs[:1]
    assert x509.load_pem_x509_certificates(pems[2][1].encode()) == [certs[1], certs[0]]
    for level, (cert_pem, chain_pem) in enumerate(pems):
        assert await pkilint_errors(cert_pem) == [], (cas[level]["name"], cert_pem)
        code, out = await openssl_verify(tmp_path / str(level), root_pem, chain_pem, cert_pem)
        assert code == 0 and out.strip().endswith(": OK"), (cas[level]["name"], out)


@pytest.mark.parametrize("algorithm", KEY_ALGORITHMS)
async def test_three_level_chain_of_each_key_algorithm_passes_pkilint_and_openssl_verify(
        tenant: Tenant, algorithm: str, tmp_path: Path) -> None:
    cas = await _build_chain(tenant, (algorithm, algorithm, algorithm))
    await _assert_chain_passes_checkers(tenant, cas, tmp_path)


async def test_chain_mixing_key_families_passes_pkilint_and_openssl_verify(tenant: Tenant, tmp_path: Path) -> None:
    # Each signature is made by a different family: Ed25519 signs RSA, RSA signs ECDSA.
    cas = await _build_chain(tenant, ("ED25519", "RSA_2048", "EC_secp384r1"))
    await _assert_chain_passes_checkers(tenant, cas, tmp_path)


async def test_parent_with_max_path_length_0_cannot_have_an_intermediate_child(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "pathlen zero", maxPathLength=0))
    cert = x509.load_pem_x509_certificate((await ca_certificate(tenant.admin, root["id"]))[0].encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(CAS, ca_body(tenant.project_id, "too deep", parent=root["id"]))

    assert r.status == 400 and problem_fields(r) == {"configuration.parentCaId"}, r.body
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_child_path_length_defaults_to_its_parents_minus_one(tenant: Tenant) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "pathlen two", maxPathLength=2))
    child = await create_ca(tenant.admin, ca_body(tenant.project_id, "pathlen child", parent=root["id"]))
    grandchild = await create_ca(tenant.admin, ca_body(tenant.project_id, "pathlen grandchild", parent=child["id"],
                                                       ttl="2y"))
    for ca, expected in ((child, 1), (grandchild, 0)):
        assert ca["configuration"]["maxPathLength"] == expected
        cert = x509.load_pem_x509_certificate((await ca_certificate(tenant.admin, ca["id"]))[0].encode())
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == expected


async def test_child_path_length_not_below_its_parents_is_rejected(tenant: Tenant, db: asyncpg.Connection) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "pathlen one", maxPathLength=1))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(CAS, ca_body(tenant.project_id, "as deep as parent", parent=root["id"],
                                             maxPathLength=1))

    assert r.status == 400 and problem_fields(r) == {"configuration.maxPathLength"}, r.body
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert await fingerprint(db, tenant.project_id) == before


@pytest.mark.parametrize("lifetime", ["ttl", "notAfter"])
async def test_ca_outliving_its_parent_is_rejected_and_nothing_is_written(
        tenant: Tenant, db: asyncpg.Connection, lifetime: str) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "short lived root", ttl="1y"))
    parent_end = datetime.fromisoformat(root["configuration"]["notAfter"])
    body = ca_body(tenant.project_id, "outlives parent", parent=root["id"], ttl="2y")
    if lifetime == "notAfter":
        del body["configuration"]["ttl"]
        body["configuration"]["notAfter"] = (parent_end + timedelta(days=1)).isoformat()
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(CAS, body)

    assert r.status == 400 and problem_fields(r) == {f"configuration.{lifetime}"}, r.body
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert "outlive" in r.body["errors"][0]["message"]
    assert await fingerprint(db, tenant.project_id) == before
    assert [ca["name"] for ca in await list_cas(tenant.admin, tenant.project_id)] == ["short-lived-root"]


async def test_duplicate_ca_name_in_a_project_is_409_and_nothing_is_written(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    await create_ca(tenant.admin, ca_body(tenant.project_id, "taken"))
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(CAS, ca_body(tenant.project_id, "taken", key_algorithm="ED25519"))

    assert r.status == 409 and problem_fields(r) == {"name"}, r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_disabled_ca_cannot_be_the_parent_of_a_new_ca(tenant: Tenant, db: asyncpg.Connection) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "to disable"))
    r = await tenant.admin.patch(f"{CAS}/{root['id']}", {"status": "disabled"})
    assert r.status == 200 and r.body["status"] == "disabled", r.body
    before = await fingerprint(db, tenant.project_id)

    r = await tenant.admin.post(CAS, ca_body(tenant.project_id, "under disabled", parent=root["id"]))

    assert r.status == 400 and problem_fields(r) == {"configuration.parentCaId"}, r.body
    assert r.body["type"].endswith("/policy-violation"), r.body
    assert await fingerprint(db, tenant.project_id) == before


async def test_disabled_ca_enabled_again_signs_a_new_intermediate(tenant: Tenant, tmp_path: Path) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "re-enabled"))
    assert (await tenant.admin.patch(f"{CAS}/{root['id']}", {"status": "disabled"})).status == 200

    r = await tenant.admin.patch(f"{CAS}/{root['id']}", {"status": "active"})

    assert r.status == 200 and r.body["status"] == "active", r.body
    child = await create_ca(tenant.admin, ca_body(tenant.project_id, "after re-enable", parent=root["id"]))
    cert_pem, chain_pem = await ca_certificate(tenant.admin, child["id"])
    code, out = await openssl_verify(tmp_path, (await ca_certificate(tenant.admin, root["id"]))[0], chain_pem,
                                     cert_pem)
    assert code == 0, out


async def test_viewer_reads_cas_but_gets_403_on_create_and_status_change(
        tenant: Tenant, db: asyncpg.Connection) -> None:
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "viewed"))
    viewer, _ = await tenant.identity("viewer")
    for path, params in ((CAS, {"projectId": tenant.project_id}), (f"{CAS}/{root['id']}", None),
                         (f"{CAS}/{root['id']}/certificate", None)):
        r = await viewer.get(path, params=params)
        assert r.status == 200, (path, r.body)
    before = await fingerprint(db, tenant.project_id)

    created = await viewer.post(CAS, ca_body(tenant.project_id, "by viewer", parent=root["id"]))
    disabled = await viewer.patch(f"{CAS}/{root['id']}", {"status": "disabled"})

    assert created.status == 403 and created.is_problem(), created.body
    assert disabled.status == 403 and disabled.is_problem(), disabled.body
    assert await fingerprint(db, tenant.project_id) == before
