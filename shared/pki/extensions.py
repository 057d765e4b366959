"""What a certificate's key may be used for: the key usage and extended key usage extensions.

Pure functions from the template's usage names (the API's spelling) to ``cryptography``'s
``x509.KeyUsage`` and ``x509.ExtendedKeyUsage``, checked against what the subject key's family can do
(RFC 3279, RFC 5480, RFC 8410), RFC 5280 and RFC 3161, so that pkilint finds nothing to refuse. A
problem is a ``PolicyViolation`` naming the API field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.errors import FieldError, PolicyViolation

KEY_USAGES: Final = (
    "digital_signature", "key_encipherment", "non_repudiation", "data_encipherment", "key_agreement",
    "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)
# The API calls it non_repudiation (as Hanzo KMS does); X.509 renamed the bit contentCommitment.
_KEY_USAGE_ALIASES: Final = {"content_commitment": "non_repudiation"}

EXTENDED_KEY_USAGES: Final[dict[str, x509.ObjectIdentifier]] = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "any_purpose": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}

# Key usages a subject key can carry, by family. RSA: RFC 3279 2.3.1 / RFC 4055 (no key agreement).
# EC: RFC 5480 section 3 (no key or data encipherment). Ed25519: RFC 8410 section 5 (signing only).
# pkilint reports an ERROR for any bit outside these sets.
_ALLOWED_KEY_USAGES: Final[dict[str, frozenset[str]]] = {
    "RSA": frozenset({"digital_signature", "non_repudiation", "key_encipherment", "data_encipherment",
                      "key_cert_sign", "crl_sign"}),
    "ECDSA": frozenset({"digital_signature", "non_repudiation", "key_agreement", "key_cert_sign",
                        "crl_sign", "encipher_only", "decipher_only"}),
    "ED25519": frozenset({"digital_signature", "non_repudiation", "key_cert_sign", "crl_sign"}),
}


_RSA_ONLY: Final = frozenset({"key_encipherment", "data_encipherment"})


def key_usage(names: Iterable[str], subject_family: str) -> x509.KeyUsage:
    """The key usage extension for a key of ``subject_family``; every problem reported at once."""
    requested = {_KEY_USAGE_ALIASES.get(name, name) for name in names}
    if subject_family != "RSA" and requested - _RSA_ONLY:
        # Upstream's clients (the KMS agent's sample configs among them) ask for key_encipherment with EC
        # keys, and upstream issues it. Such a key cannot encipher (RFC 5480, RFC 8410) and pkilint calls the
        # bit an error, so it is left out rather than the request refused, provided a usage remains.
        requested -= _RSA_ONLY
    errors: list[FieldError] = []
    unknown = sorted(requested - set(KEY_USAGES))
    if unknown:
        errors.append(FieldError(
            "attributes.keyUsages", f"unknown key usage(s) {', '.join(unknown)}; use {', '.join(KEY_USAGES)}"
        ))
    if not requested:
        # An empty KeyUsage is not valid DER (a named BIT STRING needs one bit), and leaving the
        # extension out would contradict DESIGN.md section 6; the profile must say what the key is for.
        errors.append(FieldError("attributes.keyUsages", "at least one key usage is required"))
    not_for_key = sorted((requested & set(KEY_USAGES)) - _ALLOWED_KEY_USAGES[subject_family])
    if not_for_key:
        errors.append(FieldError(
            "attributes.keyUsages",
            f"{', '.join(not_for_key)} cannot be used with a {subject_family} key "
            f"(allowed: {', '.join(sorted(_ALLOWED_KEY_USAGES[subject_family]))})",
        ))
    if requested & {"encipher_only", "decipher_only"} and "key_agreement" not in requested:
        errors.append(FieldError(
            "attributes.keyUsages", "encipher_only and decipher_only are meaningful only with key_agreement"
        ))
    if errors:
        raise PolicyViolation(errors)
    return x509.KeyUsage(
        digital_signature="digital_signature" in requested,
        content_commitment="non_repudiation" in requested,
        key_encipherment="key_encipherment" in requested,
        data_encipherment="data_encipherment" in requested,
        key_agreement="key_agreement" in requested,
        key_cert_sign="key_cert_sign" in requested,
        crl_sign="crl_sign" in requested,
        encipher_only="encipher_only" in requested,
        decipher_only="decipher_only" in requested,
    )


def extended_key_usage(names: Iterable[str]) -> tuple[x509.ExtendedKeyUsage, bool] | None:
    """The EKU extension and its criticality, or None when the template names no usage."""
    chosen = set(names)
    unknown = sorted(chosen - EXTENDED_KEY_USAGES.keys())
    if unknown:
        raise PolicyViolation([FieldError(
            "attributes.extendedKeyUsages",
            f"unknown extended key usage(s) {', '.join(unknown)}; use {', '.join(EXTENDED_KEY_USAGES)}",
        )])
    if not chosen:
        return None  # an empty SEQUENCE is invalid (SIZE 1..MAX); no EKU means "no restriction"
    # RFC 3161 section 2.3: a time-stamping authority's EKU holds timeStamping alone and is critical
    # (pkilint reports an ERROR otherwise). Every other combination stays non-critical, as RFC 5280
    # 4.2.1.12 advises when anyExtendedKeyUsage may be present.
    time_stamping = "time_stamping" in chosen
    if time_stamping and len(chosen) > 1:
        raise PolicyViolation([FieldError(
            "attributes.extendedKeyUsages",
            "time_stamping must be the only extended key usage of a certificate (RFC 3161 section 2.3)",
        )])
    # The API's order, so the same template always yields the same DER.
    usages = x509.ExtendedKeyUsage([oid for name, oid in EXTENDED_KEY_USAGES.items() if name in chosen])
    return usages, time_stamping
