"""End to end: a certificate requested over HTTP, signed by the worker, faces the real checkers of
DESIGN.md section 6: ``openssl verify`` up to the root, DigiCert's RFC 5280 linter, and a TLS handshake
with ``openssl s_server`` serving it to a client that trusts only the root and checks the host name.

Both ways to get a key are covered for RSA, ECDSA and Ed25519 leaves: a CSR whose key the client
keeps, and a key the server generates and returns once (``privateKey``). The CAs stay EC P-256.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.api_client import Tenant
from tests.issuance.checkers import (
    openssl_verify,
    pkilint_errors,
    python_tls_handshake,
    tls_server,
)
from tests.issuance.csrs import NEW_KEY, key_pem, make_csr, spki_der
from tests.issuance.issuing import issued, server_key_attributes
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack

KEY_ALGORITHMS = ("RSA_2048", "EC_prime256v1", "ED25519")


def host_name(way: str, key_algorithm: str) -> str:
    return f"{way}-{key_algorithm.lower().replace('_', '-')}.example.test"


async def passes_real_checkers(tmp_path: Path, pki: Pki, view: dict[str, Any], key: str, name: str) -> None:
    leaf_pem = view["certificate"]
    root, chain, leaf, key_file = (tmp_path / f for f in ("root.pem", "chain.pem", "leaf.pem", "key.pem"))
    root.write_text(pki.root_pem)
    chain.write_text(view["certificateChain"])
    leaf.write_text(leaf_pem)
    key_file.write_text(key)

    code, out = await openssl_verify(tmp_path / "verify", pki.root_pem, view["certificateChain"], leaf_pem,
                                     purpose="sslserver")
    assert code == 0 and out.strip().endswith(": OK"), out

    assert await pkilint_errors(leaf_pem) == [], leaf_pem

    serial = int(view["serialNumber"], 16)
    leaf_cert = x509.load_pem_x509_certificate(leaf_pem.encode())
    assert leaf_cert.serial_number == serial
    # The profile names no usages: digital_signature, plus key_encipherment for RSA keys only (an
    # Ed25519 or ECDSA key cannot encipher, and pkilint would flag it).
    usage = leaf_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment == isinstance(leaf_cert.public_key(), rsa.RSAPublicKey)
    async with tls_server(leaf, key_file, chain) as port:
        peer_serial, version = python_tls_handshake(port, name, root)
        # The host name check is real: the same server is refused under another name.
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            python_tls_handshake(port, "elsewhere.example.test", root)
    assert peer_serial == serial
    if isinstance(leaf_cert.public_key(), ed25519.Ed25519PublicKey):
        # Ed25519 certificates exist only in TLS 1.3 (RFC 8446); Python's ssl client (OpenSSL 3) offers
        # ed25519 among its signature algorithms, so no openssl s_client fallback is needed here.
        assert version == "TLSv1.3"


@pytest.mark.parametrize("key_algorithm", KEY_ALGORITHMS)
async def test_certificate_for_a_csr_verifies_to_the_root_lints_clean_and_serves_tls(
    key_algorithm: str, worker: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    name = host_name("csr", key_algorithm)
    key = NEW_KEY[key_algorithm]()

    view = await issued(tenant.admin, pki.profile_id, csr=make_csr(key, cn=name))

    assert view["privateKey"] is None  # the service never held this key
    leaf = x509.load_pem_x509_certificate(view["certificate"].encode())
    assert spki_der(leaf.public_key()) == spki_der(key.public_key())
    await passes_real_checkers(tmp_path, pki, view, key_pem(key), name)


@pytest.mark.parametrize("key_algorithm", KEY_ALGORITHMS)
async def test_certificate_with_a_server_generated_key_verifies_to_the_root_lints_clean_and_serves_tls(
    key_algorithm: str, worker: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    name = host_name("server-key", key_algorithm)

    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(name, key_algorithm))

    assert view["privateKey"] and "PRIVATE KEY" in view["privateKey"]
    await passes_real_checkers(tmp_path, pki, view, view["privateKey"], name)
