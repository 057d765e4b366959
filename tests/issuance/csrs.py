"""Keys and CSRs as a client would make them with ``cryptography``, well-formed and hostile.

Not a test module. ``make_csr`` is the tests' one CSR builder (the unit, batch and policy tests build
theirs with it too).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

PrivateKey = Any

# The leaf key algorithms the end-to-end tests cover, by the API's name for them.
NEW_KEY: dict[str, Callable[[], PrivateKey]] = {
    "RSA_2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "EC_prime256v1": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ED25519": ed25519.Ed25519PrivateKey.generate,
}


def make_csr(
    key: PrivateKey | None = None,
    *,
    cn: str | None = "app.example.test",
    sans: tuple[x509.GeneralName, ...] | None = None,
    extensions: tuple[x509.ExtensionType, ...] = (),
    extra_subject: tuple[x509.NameAttribute[str], ...] = (),
) -> str:
    """A PEM CSR signed by ``key`` (a fresh P-256 key if None); SAN = [DNS:cn] unless ``sans`` says (``()``:
    no SAN extension); subject CN=cn, then ``extra_subject``."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    if sans is None:
        sans = (x509.DNSName(cn),) if cn else ()
    # _validate=False: a hostile client is not bound by cryptography's checks (over-long names, say).
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)] if cn else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([*subject, *extra_subject]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKey) -> str:
    pem: bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    return pem.decode()


def spki_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def pem_of(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


# -- hostile CSRs --------------------------------------------------------------------------------


def with_flipped_signature_bit() -> str:
    der = bytearray(x509.load_pem_x509_csr(make_csr().encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature BIT STRING is the last field of a CSR
    return pem_of(bytes(der))


def with_bad_base64() -> str:
    body = make_csr().splitlines()[1:-1]
    body[0] = "!!!!" + body[0][4:]
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(body) + "\n-----END CERTIFICATE REQUEST-----\n"


def with_malformed_san() -> str:
    garbage = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02garbage")
    return make_csr(sans=(), extensions=(garbage,))


def with_sans(count: int) -> str:
    return make_csr(sans=tuple(x509.DNSName(f"h{i}.example.test") for i in range(count)))


def with_rsa_1024() -> str:
    return make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the point


def with_dsa_key() -> str:
    return make_csr(dsa.generate_private_key(key_size=2048))


def with_p192_key() -> str:
    return make_csr(ec.generate_private_key(ec.SECP192R1()))


def one_mebibyte() -> str:
    return pem_of(b"\x00" * (1024 * 1024))
