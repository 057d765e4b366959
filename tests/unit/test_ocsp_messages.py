"""shared.pki.ocsp and the responder certificate, for every CA key type: a CertID built by OpenSSL (through
cryptography's request builder) names its issuer and no other CA, and a response signed by the
delegated responder verifies and says what was asked."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp

from shared.pki import builder, ocsp
from shared.pki.keys import PrivateKey, generate_private_key
from shared.pki.template import SubjectName
from worker.ocsp import responder_key_algorithm

NOW = datetime.now(UTC).replace(microsecond=0)


def ca(algorithm: str, name: str) -> tuple[x509.Certificate, PrivateKey]:
    key = generate_private_key(algorithm)
    cert = builder.build_ca_certificate(
        subject=SubjectName(common_name=name, organization="Example"), public_key=key.public_key(),
        issuer_cert=None, issuer_key=key, signature_algorithm=None, not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(days=30), path_length=None, serial=builder.new_serial())
    return cert, key


def responder_for(cert: x509.Certificate, key: PrivateKey, algorithm: str) -> tuple[x509.Certificate, PrivateKey]:
    responder_key = generate_private_key(responder_key_algorithm(algorithm))
    responder = builder.build_ocsp_responder_certificate(
        public_key=responder_key.public_key(), issuer_cert=cert, issuer_key=key, serial=builder.new_serial(),
        not_before=NOW - timedelta(minutes=1), not_after=NOW + timedelta(days=2))
    return responder, responder_key


def verify(response: x509_ocsp.OCSPResponse, responder: x509.Certificate) -> None:
    key = responder.public_key()
    data, signature, algorithm = response.tbs_response_bytes, response.signature, response.signature_hash_algorithm
    if isinstance(key, rsa.RSAPublicKey):
        assert algorithm is not None
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(signature, data)


@pytest.mark.parametrize("algorithm", ["RSA_2048", "EC_prime256v1", "EC_secp384r1", "ED25519"])
@pytest.mark.parametrize("digest", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])  # noqa: S303
def test_a_cert_id_names_its_issuer_and_no_other_and_the_answer_verifies(
        algorithm: str, digest: hashes.HashAlgorithm) -> None:
    cert, key = ca(algorithm, "OCSP Unit CA")
    other, _ = ca(algorithm, "Another CA")
    leaf_key = generate_private_key("EC_prime256v1")
    leaf = builder.build_ocsp_responder_certificate(  # any certificate the CA signed will do as the target
        public_key=leaf_key.public_key(), issuer_cert=cert, issuer_key=key, serial=builder.new_serial(),
        not_before=NOW - timedelta(minutes=1), not_after=NOW + timedelta(days=1))
    der = x509_ocsp.OCSPRequestBuilder().add_certificate(leaf, cert, digest).add_extension(
        x509.OCSPNonce(b"0123456789abcdef"), critical=False).build().public_bytes(serialization.Encoding.DER)
    query = ocsp.parse_request(der)
    assert query.serial == leaf.serial_number and query.nonce == b"0123456789abcdef"
    assert ocsp.names_issuer(query, cert)
    assert not ocsp.names_issuer(query, other)

    responder, responder_key = responder_for(cert, key, algorithm)
    body = ocsp.build_response(query, status="revoked", responder_cert=responder, responder_key=responder_key,
                               this_update=NOW, next_update=NOW + timedelta(hours=1),
                               revoked_at=NOW - timedelta(minutes=5), reason="KEY_COMPROMISE")
    response = x509_ocsp.load_der_ocsp_response(body)
    verify(response, responder)
    responder.verify_directly_issued_by(cert)
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    assert response.serial_number == leaf.serial_number and type(response.hash_algorithm) is type(digest)
    assert response.issuer_key_hash == query.issuer_key_hash
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"


def test_responder_certificate_is_a_short_lived_ocsp_signer_and_nothing_else() -> None:
    cert, key = ca("EC_prime256v1", "Responder Unit CA")
    responder, _ = responder_for(cert, key, "EC_prime256v1")
    ext = responder.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]
    assert ext.get_extension_for_class(x509.OCSPNoCheck)
    assert responder.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
        "Responder Unit CA OCSP Responder"
    assert responder.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "Example"


def test_an_rsa_ca_gets_an_rsa_2048_responder_whatever_its_own_size() -> None:
    assert responder_key_algorithm("RSA_4096") == "RSA_2048"
    assert responder_key_algorithm("EC_secp521r1") == "EC_secp521r1"


@pytest.mark.parametrize("der", [b"", b"garbage", b"\x30\x03\x02\x01\x01"])
def test_unreadable_requests_are_malformed(der: bytes) -> None:
    with pytest.raises(ocsp.MalformedOcspRequest):
        ocsp.parse_request(der)


def test_a_request_for_two_certificates_is_malformed(tmp_path: Path) -> None:
    cert, _ = ca("EC_prime256v1", "Two CA")
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    subprocess.run(["openssl", "ocsp", "-issuer", str(tmp_path / "ca.pem"), "-serial", "1", "-serial", "2",
                    "-no_nonce", "-reqout", str(tmp_path / "two.der")], check=True, capture_output=True)
    with pytest.raises(ocsp.MalformedOcspRequest):
        ocsp.parse_request((tmp_path / "two.der").read_bytes())


def test_unsuccessful_responses_carry_only_their_status() -> None:
    for name, status in (("malformed", x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
                         ("unauthorized", x509_ocsp.OCSPResponseStatus.UNAUTHORIZED),
                         ("try_later", x509_ocsp.OCSPResponseStatus.TRY_LATER)):
        assert x509_ocsp.load_der_ocsp_response(ocsp.unsuccessful(name)).response_status == status  # type: ignore[arg-type]
