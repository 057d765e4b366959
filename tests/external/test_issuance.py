"""Issuing through an external ACME CA (issue 13, "Must show" 1 and 3): pebble on loopback signs, the
service answers with a request id, the worker obtains the certificate, and the chain verifies to pebble's
root. One upstream order per request, counted on pebble's side and in the stored order URLs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api_client import Tenant
from tests.external.conftest import World
from tests.external.upstream import ZONE
from tests.external.world import final, make_acme_pki, pebble_new_orders, server_key_body, stored_orders, submit


def verify_to_pebble_root(world: World, certificate: str, chain: str, folder: Path) -> None:
    (folder / "root.pem").write_text(world.upstream.pebble.root_pem())
    (folder / "chain.pem").write_text(chain)
    (folder / "cert.pem").write_text(certificate)
    out = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "root.pem"), "-untrusted",
                          str(folder / "chain.pem"), str(folder / "cert.pem")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def csr_for(name: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


async def test_a_csr_request_through_an_external_acme_ca_ends_issued_with_a_chain_to_pebbles_root(
        world: World, ext_tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="csr")
    before = pebble_new_orders(world.upstream.pebble)
    csr, key = csr_for(f"csr.{ZONE}")
    answer = await submit(ext_tenant.admin, {"profileId": pki.profile_id, "csr": csr})
    assert answer["status"] == "pending" and answer["certificate"] is None
    view = await final(ext_tenant.admin, answer["certificateRequestId"])
    assert view["status"] == "issued", view
    cert = x509.load_pem_x509_certificate(view["certificate"].encode())
    assert cert.public_key() == key.public_key()
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [f"csr.{ZONE}"]
    assert view["privateKey"] is None
    # The whole upstream chain is kept and served: pebble's intermediate, then up to its root.
    assert "Pebble Intermediate CA" in x509.load_pem_x509_certificate(
        view["issuingCaCertificate"].encode()).subject.rfc4514_string()
    verify_to_pebble_root(world, view["certificate"], view["certificateChain"], tmp_path)
    orders = await stored_orders(world.stack.database_url, pki.ca_id)
    assert [r for r, _ in orders] == [answer["certificateRequestId"]] and orders[0][1]
    assert pebble_new_orders(world.upstream.pebble) - before == 1


async def test_a_server_key_request_through_an_external_acme_ca_with_wait_answers_200_with_its_key(
        world: World, ext_tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="srv")
    answer = await submit(ext_tenant.admin, server_key_body(pki.profile_id, f"web.{ZONE}"), wait=30)
    assert answer["status"] == "issued", answer
    body = answer["certificate"]
    key = serialization.load_pem_private_key(body["privateKey"].encode(), None)
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert cert.public_key() == key.public_key()
    verify_to_pebble_root(world, body["certificate"], body["certificateChain"], tmp_path)
    meta = await ext_tenant.admin.get(f"/api/v1/cert-manager/certificates/{body['certificateId']}")
    assert meta.status == 200 and meta.body["certificate"]["caType"] == "acme", meta.body
    assert meta.body["certificate"]["caId"] == pki.ca_id
