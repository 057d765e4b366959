"""Key algorithms of the API and what they mean to ``cryptography``.

Names are DESIGN.md section 5's: ``RSA_2048 ... ED25519`` for keys and ``RSA-SHA256 ... ED25519`` for
signatures. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shared.errors import BadRequest

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

KEY_ALGORITHMS: Final = (
    "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1", "ED25519",
)
SIGNATURE_ALGORITHMS: Final = (
    "RSA-SHA256", "RSA-SHA384", "RSA-SHA512", "ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512", "ED25519",
)

_RSA_BITS: Final = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    "EC_prime256v1": ec.SECP256R1, "EC_secp384r1": ec.SECP384R1, "EC_secp521r1": ec.SECP521R1,
}
_CURVE_NAMES: Final[dict[str, str]] = {cls().name: alg for alg, cls in _CURVES.items()}

# The signature algorithm an issuer uses when the request names none: the hash matched to key strength.
DEFAULT_SIGNATURE: Final = {
    "RSA_2048": "RSA-SHA256", "RSA_3072": "RSA-SHA384", "RSA_4096": "RSA-SHA512",
    "EC_prime256v1": "ECDSA-SHA256", "EC_secp384r1": "ECDSA-SHA384", "EC_secp521r1": "ECDSA-SHA512",
    "ED25519": "ED25519",
}
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512,
}


def generate_private_key(algorithm: str) -> PrivateKey:
    """A fresh key pair of the named algorithm (from the OS CSPRNG)."""
    if algorithm in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[algorithm])
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise BadRequest(f"unsupported key algorithm {algorithm!r}; use one of {', '.join(KEY_ALGORITHMS)}")


def algorithm_of_public_key(key: object) -> str:
    """The API name of a public key's algorithm, or BadRequest for keys the service refuses.

    RSA must be 2048 bits or more (any size from 2048 up maps to the nearest name at or below it);
    EC must be on P-256, P-384 or P-521; Ed25519 is accepted; DSA, Ed448, X25519 and others are not.
    """
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < 2048:
            raise BadRequest(f"RSA key of {bits} bits is too weak; at least 2048 bits are required")
        if bits >= 4096:
            return "RSA_4096"
        return "RSA_3072" if bits >= 3072 else "RSA_2048"
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _CURVE_NAMES.get(key.curve.name)
        if name is None:
            raise BadRequest(f"EC curve {key.curve.name} is not accepted; use P-256, P-384 or P-521")
        return name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ED25519"
    raise BadRequest(f"public key type {type(key).__name__} is not accepted; use RSA, EC or Ed25519")


def signature_family(key_algorithm: str) -> str:
    """'RSA', 'ECDSA' or 'ED25519': which signature algorithms a key of this algorithm can make."""
    if key_algorithm.startswith("RSA"):
        return "RSA"
    if key_algorithm.startswith("EC"):
        return "ECDSA"
    return "ED25519"


def signature_compatible(signature_algorithm: str, key_algorithm: str) -> bool:
    """Whether a key of ``key_algorithm`` can make signatures of ``signature_algorithm``."""
    return signature_algorithm.split("-")[0] == signature_family(key_algorithm)


def hash_for(signature_algorithm: str) -> hashes.HashAlgorithm | None:
    """The hash to pass to ``CertificateBuilder.sign`` (None for Ed25519, which hashes internally)."""
    if signature_algorithm == "ED25519":
        return None
    return _HASHES[signature_algorithm.split("-")[1]]()


def private_key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: only ever handed to the envelope or to the caller who owns the key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_to_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key_der(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported stored key type {type(key).__name__}")
    return key
