"""OCSP (RFC 6960) requests and responses: pure functions over ``cryptography.x509.ocsp``.

The responder answers with a delegated OCSP signing certificate (``builder.build_ocsp_responder_certificate``)
that a worker issues from the CA, so the API process signs responses without ever holding a CA key
(DESIGN.md 7). A request names a certificate by CertID: the hashes of its issuer's name and key under
the hash the client chose (SHA-1 by default in OpenSSL, SHA-256 and the other SHA-2 also accepted) and
its serial. The responder is authoritative only for its CA: a CertID whose issuer hashes do not match
the CA's is answered ``unauthorized`` (RFC 6960 2.3), never ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp

from shared.pki.crl import REASONS
from shared.pki.keys import PrivateKey

# The CertID hashes a client may use. SHA-1 is what OpenSSL and most clients send; it identifies here,
# it does not sign (a collision would only make a client ask about another of the same CA's serials).
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
Status = Literal["good", "revoked", "unknown"]


class MalformedOcspRequest(ValueError):
    """Not an OCSP request we can answer (unparseable, several CertIDs, an unsupported hash)."""


@dataclass(frozen=True)
class OcspQuery:
    serial: int
    hash_algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: bytes | None


def parse_request(der: bytes) -> OcspQuery:
    """The one CertID (and nonce) of a DER OCSP request."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm
        serial, name_hash, key_hash = request.serial_number, request.issuer_name_hash, request.issuer_key_hash
        try:
            nonce: bytes | None = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
    except (ValueError, TypeError) as exc:  # cryptography: not DER, not an OCSPRequest, several requests
        raise MalformedOcspRequest(str(exc) or "not an OCSP request") from exc
    except Exception as exc:  # an unsupported CertID hash is UnsupportedAlgorithm
        raise MalformedOcspRequest(f"cannot read the request: {exc}") from exc
    if algorithm.name not in CERT_ID_HASHES:
        raise MalformedOcspRequest(f"CertID hash {algorithm.name} is not supported; use SHA-1 or SHA-256")
    return OcspQuery(serial, algorithm, name_hash, key_hash, nonce)


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The contents of the certificate's subjectPublicKey BIT STRING, which the key hash covers."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise TypeError(f"unsupported CA key type {type(key).__name__}")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(CERT_ID_HASHES[algorithm.name]())
    h.update(data)
    return h.finalize()


def names_issuer(query: OcspQuery, ca_cert: x509.Certificate) -> bool:
    """Whether the query's CertID names ``ca_cert`` as the issuer."""
    return (_digest(query.hash_algorithm, ca_cert.subject.public_bytes()) == query.issuer_name_hash
            and _digest(query.hash_algorithm, _public_key_bits(ca_cert)) == query.issuer_key_hash)


def _signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    return hashes.SHA256()


def build_response(query: OcspQuery, *, status: Status, responder_cert: x509.Certificate,
                   responder_key: PrivateKey, this_update: datetime, next_update: datetime,
                   revoked_at: datetime | None = None, reason: str | None = None) -> bytes:
    """A signed, successful BasicOCSPResponse (DER) for the query's CertID, with the client's nonce echoed.

    The responder is named by key hash and its certificate included, so a client verifies it against
    the CA it already trusts. A reason of UNSPECIFIED is left out, as on the CRL."""
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash, issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial, algorithm=query.hash_algorithm, cert_status=cert_status,
        this_update=this_update.replace(microsecond=0), next_update=next_update.replace(microsecond=0),
        revocation_time=revoked_at.replace(microsecond=0) if status == "revoked" and revoked_at else None,
        revocation_reason=REASONS.get(reason or "UNSPECIFIED") if status == "revoked" else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert).certificates([responder_cert])
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    response = builder.sign(responder_key, _signing_hash(responder_key))
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful(status: Literal["malformed", "unauthorized", "try_later", "internal_error"]) -> bytes:
    """An unsigned error response (RFC 6960 2.3): no status about any certificate."""
    code = {"malformed": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
            "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
            "try_later": ocsp.OCSPResponseStatus.TRY_LATER,
            "internal_error": ocsp.OCSPResponseStatus.INTERNAL_ERROR}[status]
    return ocsp.OCSPResponseBuilder.build_unsuccessful(code).public_bytes(serialization.Encoding.DER)
