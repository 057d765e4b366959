"""Reading a CSR: PEM text in, what its key holder asks for out (``CsrRequest``), or ``BadRequest``.

A CSR is untrusted input from the requester, so it is parsed strictly (one PEM block, strict base64,
at most ``MAX_CSR_BYTES``), its signature must verify with the key it carries (proof of possession),
and every name it asks for is read with the same models, and so the same rules, as a request's
``attributes`` (``shared.policy.evaluation``). What cannot be represented is refused, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import Field, ValidationError

from shared.errors import BadRequest, FieldError
from shared.pki.keys import PrivateKey, algorithm_of_public_key
from shared.policy.attributes import MAX_ALT_NAMES, AltNameInput, BasicConstraintsInput, SubjectFields

MAX_CSR_BYTES: Final = 16 * 1024
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE REQUEST-----"
_PEM_END: Final = "-----END CERTIFICATE REQUEST-----"


class _CsrNames(SubjectFields):
    alt_names: list[AltNameInput] = Field(default_factory=list)


@dataclass(frozen=True)
class CsrRequest:
    """What a verified CSR asks for; extensions the CSR does not request are None."""

    names: _CsrNames
    key_algorithm: str
    public_key_der: bytes
    key_usages: list[str] | None
    extended_key_usages: list[str] | None
    basic_constraints: BasicConstraintsInput | None


_SUBJECT_OIDS: Final = {
    NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organization",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnit", NameOID.COUNTRY_NAME: "country",
    NameOID.STATE_OR_PROVINCE_NAME: "state", NameOID.LOCALITY_NAME: "locality",
}
_KEY_USAGE_FLAGS: Final = {
    "digital_signature": "digital_signature", "non_repudiation": "content_commitment",
    "key_encipherment": "key_encipherment", "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement", "key_cert_sign": "key_cert_sign", "crl_sign": "crl_sign",
}
_EKU_NAMES: Final = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server_auth", ExtendedKeyUsageOID.CLIENT_AUTH: "client_auth",
    ExtendedKeyUsageOID.CODE_SIGNING: "code_signing",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "email_protection",
    ExtendedKeyUsageOID.OCSP_SIGNING: "ocsp_signing", ExtendedKeyUsageOID.TIME_STAMPING: "time_stamping",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "any_purpose",
}


def _short(error: Exception) -> str:
    return str(error)[:200]


def _field_errors(prefix: str, error: ValidationError) -> list[FieldError]:
    errors = []
    for item in error.errors():
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
        errors.append(FieldError(path, item["msg"]))
    return errors


def _load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """Parse the PEM text strictly: one CSR block, nothing around it but whitespace, strict base64."""
    size = len(csr_pem.encode("utf-8", "replace"))
    if size > MAX_CSR_BYTES:
        raise BadRequest(f"CSR is {size} bytes; at most {MAX_CSR_BYTES} bytes (16 KiB) are accepted",
                         [FieldError("csr", "too large")])
    text = csr_pem.strip()
    if text.count(_PEM_BEGIN) != 1 or not text.startswith(_PEM_BEGIN) or not text.endswith(_PEM_END) \
            or text.count(_PEM_END) != 1:
        raise BadRequest(f"CSR must be PEM text holding exactly one '{_PEM_BEGIN}' block and nothing else",
                         [FieldError("csr", "not a single PEM certificate request")])
    body = "".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise BadRequest("CSR PEM body is not valid base64", [FieldError("csr", "bad base64")]) from None
    try:
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise BadRequest(f"CSR is not a valid PKCS#10 certification request: {_short(exc)}",
                         [FieldError("csr", "not PKCS#10")]) from None


# -- weak keys (Boulder's goodkey, CA/B Forum Baseline Requirements 6.1.1.3 and 6.1.6) ------------

# BR 6.1.6: the public exponent is odd, and SHOULD lie in [2^16 + 1, 2^256 - 1]; both bounds are
# enforced. (Boulder goes further and takes only 65537; any exponent here is as safe, just rarer.)
_MIN_RSA_EXPONENT: Final = 2**16 + 1
_MAX_RSA_EXPONENT: Final = 2**256 - 1


def _primes_up_to(limit: int) -> list[int]:
    sieve = bytearray([1]) * (limit + 1)
    sieve[:2] = b"\x00\x00"[: limit + 1]
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytes(len(range(p * p, limit + 1, p)))
    return [n for n in range(limit + 1) if sieve[n]]


# BR 6.1.6: the modulus SHOULD have no factor below 752 (so it is also odd).
_SMALL_PRIMES: Final = tuple(_primes_up_to(751))
_SMALL_PRIMES_PRODUCT: Final = math.prod(_SMALL_PRIMES)
# OpenSSL's OPENSSL_RSA_MAX_MODULUS_BITS: it verifies no signature of a larger key in any case.
_MAX_RSA_BITS: Final = 16384
# BR 6.1.1.3 asks for at least 100 rounds of Fermat factorisation; Boulder runs 110.
FERMAT_ROUNDS: Final = 110


def _integer_root(n: int, k: int) -> int:
    """floor(n ** (1 / k)) for n >= 1 and k >= 2, by Newton's method on integers.

    Floats cannot hold a modulus, but log2 of one they can, to about 15 digits: that gives a start
    with some 35 correct bits, just above the root, from where Newton's step (which never undershoots
    the floor of the root) converges in a few quadratic steps.
    """
    top = max(0, n.bit_length() - 64)
    exponent = (top + math.log2(n >> top)) / k
    whole = math.floor(exponent)
    mantissa = int(2 ** (exponent - whole) * 2**52)
    x = mantissa << (whole - 52) if whole >= 52 else mantissa >> (52 - whole)
    x += (x >> 30) + 2  # over the root, whatever the rounding
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _fermat_factor(n: int, rounds: int) -> tuple[int, int] | None:
    """Factors p <= q of odd ``n`` with (p + q) / 2 within ``rounds`` steps of sqrt(n), else None.

    n = a^2 - b^2 = (a - b)(a + b): try a from ceil(sqrt(n)) up and look for a square a^2 - n. Primes
    picked independently at random are never this close; primes that are can be found by anyone.
    Starting at the ceiling (not floor + 1, as Boulder does) also catches n = p^2.
    """
    a = math.isqrt(n)
    if a * a < n:
        a += 1
    for _ in range(rounds):
        b2 = a * a - n
        b = math.isqrt(b2)
        if b * b == b2:
            return a - b, a + b
        a += 1
    return None


def rsa_key_weakness(numbers: rsa.RSAPublicNumbers) -> str | None:
    """Why an RSA public key must be refused although its size is acceptable, or None.

    Pure arithmetic on the public numbers, so it applies to any RSA key the service accepts. Checks:
    at most ``_MAX_RSA_BITS`` (the 2048-bit floor is ``keys.algorithm_of_public_key``'s), the
    exponent (odd, within BR 6.1.6's range), a factor below 752 (even moduli included), a modulus that
    is a perfect power (p^k, k >= 2: not a product of distinct primes, and factored by a k-th root),
    and primes close enough together for ``FERMAT_ROUNDS`` rounds of Fermat factorisation to find.
    """
    e, n = numbers.e, numbers.n
    if n.bit_length() > _MAX_RSA_BITS:
        # Checked first: the checks below, like any RSA operation, grow with the modulus.
        return (f"RSA modulus of {n.bit_length()} bits is refused: at most {_MAX_RSA_BITS} bits are accepted "
                "(OpenSSL's own limit for RSA operations)")
    if e % 2 == 0 or not _MIN_RSA_EXPONENT <= e <= _MAX_RSA_EXPONENT:
        shown = e if e.bit_length() <= 64 else f"of {e.bit_length()} bits"
        return (f"RSA public exponent {shown} is refused: it must be odd and between 65537 (2^16 + 1) and "
                "2^256 - 1 (CA/B Forum Baseline Requirements 6.1.6)")
    if math.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
        prime = next(p for p in _SMALL_PRIMES if n % p == 0)
        return f"RSA modulus is divisible by {prime}: a modulus with a factor below 752 is broken"
    # A k-th power is a p-th power for each prime p dividing k, so prime k suffice; every prime
    # factor is now above 751 > 2^9, so k <= bits / 9.
    for k in _primes_up_to(n.bit_length() // 9):
        if _integer_root(n, k) ** k == n:
            return f"RSA modulus is a perfect power (r^{k} for an integer r), not a product of distinct primes"
    if _fermat_factor(n, FERMAT_ROUNDS) is not None:
        return (f"RSA modulus factors by Fermat's method within {FERMAT_ROUNDS} rounds: its primes are so "
                "close together that anyone can recover the private key")
    return None


def _refuse_weak_key(public_key: object) -> None:
    """BadRequest naming the ``csr`` field if the CSR's key is known to be weak.

    EC points need no check here: ``cryptography`` refuses a point that is not on its curve when the
    key is loaded, so such a CSR already fails as "public key cannot be loaded".
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        weakness = rsa_key_weakness(public_key.public_numbers())
        if weakness is not None:
            raise BadRequest(f"CSR public key is weak: {weakness}", [FieldError("csr", weakness)])


def read_csr(csr_pem: str, *, check_signature: bool = True) -> CsrRequest:
    """Parse and verify a PEM CSR and collect what it asks for; BadRequest naming any problem.

    The key must be one the service accepts (``keys.algorithm_of_public_key``), not a known weak one
    (``rsa_key_weakness``), and the CSR's signature must verify with it: that is the proof that the
    requester holds the private key. Only CN, O, OU, C, ST and L subject attributes and DNS/IP/email/URI
    alt names can be represented, so anything else is refused rather than silently dropped. Requested
    extensions other than SAN, key usage, EKU and basic constraints are ignored: the certificate's
    extensions are decided by the service.

    ``check_signature=False`` is for a CSR whose signature this service has already verified (the worker's
    second evaluation of a stored request, DESIGN.md 4.6): a signature's validity is a property of the CSR's
    bytes, which cannot have changed since, so checking it again proves nothing and costs the most of a read.
    """
    csr = _load_csr(csr_pem)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadRequest(f"CSR public key cannot be loaded: {_short(exc)}",
                         [FieldError("csr", "unsupported public key")]) from None
    try:
        key_algorithm = algorithm_of_public_key(public_key)
    except BadRequest as exc:
        raise BadRequest(exc.detail, [FieldError("csr", exc.detail)]) from None
    _refuse_weak_key(public_key)
    try:
        signature_valid = not check_signature or csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_valid = False
    if not signature_valid:
        raise BadRequest("CSR signature does not verify with its public key: the CSR was altered or "
                         "not signed by the key it contains", [FieldError("csr", "bad signature")])

    errors: list[FieldError] = []
    names: dict[str, Any] = {}
    for attribute in csr.subject:
        field = _SUBJECT_OIDS.get(attribute.oid)
        if field is None:
            errors.append(FieldError("csr.subject", f"subject attribute {attribute.rfc4514_attribute_name} "
                                     "is not supported; use CN, O, OU, C, ST, L only"))
        elif field in names:
            errors.append(FieldError(f"csr.{field}", f"more than one {field} in the subject"))
        else:
            names[field] = attribute.value

    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        which = "subjectAltName extension" if "subject_alternative_name" in str(exc) else "extension request"
        raise BadRequest(f"CSR's {which} is malformed and cannot be read: {_short(exc)}",
                         [FieldError("csr", f"malformed {which}")]) from None

    alt_names: list[dict[str, str]] = []
    san = _extension(extensions, x509.SubjectAlternativeName)
    if san is not None:
        if len(san) > MAX_ALT_NAMES:
            raise BadRequest(f"CSR requests {len(san)} subject alternative names; at most {MAX_ALT_NAMES} "
                             "are accepted", [FieldError("csr.altNames", "too many")])
        for general_name in san:
            kind = _alt_name_type(general_name)
            if kind is None:
                errors.append(FieldError("csr.altNames", f"alt name {general_name} is not supported; use "
                                         "DNS, IP, email or URI names"))
            else:
                alt_names.append({"type": kind, "value": str(general_name.value)})
    names["altNames"] = alt_names

    try:
        csr_names = _CsrNames.model_validate(names)
    except ValidationError as exc:
        errors += _field_errors("csr", exc)
        csr_names = _CsrNames()
    extended = _extension(extensions, x509.ExtendedKeyUsage)
    eku_names = None
    if extended is not None:
        eku_names = []
        for oid in extended:
            if oid in _EKU_NAMES:
                eku_names.append(_EKU_NAMES[oid])
            else:
                errors.append(FieldError("csr.extendedKeyUsages", f"extended key usage {oid.dotted_string} "
                                         "is not supported"))
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise BadRequest(f"CSR asks for names the service cannot issue: {detail}", errors)

    constraints = _extension(extensions, x509.BasicConstraints)
    return CsrRequest(
        names=csr_names,
        key_algorithm=key_algorithm,
        public_key_der=public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
        key_usages=_key_usage_names(_extension(extensions, x509.KeyUsage)),
        extended_key_usages=eku_names,
        basic_constraints=None if constraints is None else BasicConstraintsInput(
            is_ca=constraints.ca, path_length=constraints.path_length),
    )


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(extensions: x509.Extensions, kind: type[E]) -> E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _alt_name_type(general_name: x509.GeneralName) -> str | None:
    kinds: list[tuple[type[x509.GeneralName], str]] = [
        (x509.DNSName, "dns_name"), (x509.IPAddress, "ip_address"), (x509.RFC822Name, "email"),
        (x509.UniformResourceIdentifier, "uri"),
    ]
    return next((name for cls, name in kinds if isinstance(general_name, cls)), None)


def _key_usage_names(usage: x509.KeyUsage | None) -> list[str] | None:
    if usage is None:
        return None
    names = [name for name, flag in _KEY_USAGE_FLAGS.items() if getattr(usage, flag)]
    # cryptography raises on encipher_only/decipher_only unless key_agreement is set.
    if usage.key_agreement:
        names += [name for name in ("encipher_only", "decipher_only") if getattr(usage, name)]
    return names



def build_csr(subject: x509.Name, alt_names: x509.SubjectAlternativeName | None, private_key: PrivateKey) -> str:
    """A PKCS#10 request for a key the server made (an external CA signs the names it carries), PEM."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if alt_names is not None:
        builder = builder.add_extension(alt_names, critical=False)
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private_key, algorithm).public_bytes(serialization.Encoding.PEM).decode()
