"""Building X.509 certificates: a thin layer of pure functions over ``cryptography``'s builder.

Data in (a ``CertificateTemplate`` or a CA's subject, keys, a validity window, a serial), a signed
``x509.Certificate`` out. No I/O, no clock, no globals: the caller passes ``now`` and the serial, so
the worker can reserve the serial in the database before signing (DESIGN.md invariant 3).

Every certificate built here must pass pkilint's RFC 5280 linter with no ERROR or FATAL finding and
chain-verify with OpenSSL and ``cryptography.x509.verification`` (DESIGN.md section 6). The checks
below reject, with a ``PolicyViolation`` naming the field, any input that would produce a certificate
those checkers refuse, rather than silently dropping or adding content.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import FieldError, PolicyViolation
from shared.keys import (
    DEFAULT_SIGNATURE,
    SIGNATURE_ALGORITHMS,
    PrivateKey,
    PublicKey,
    algorithm_of_public_key,
    hash_for,
    signature_compatible,
    signature_family,
)
from shared.template import AltName, CertificateTemplate, SubjectName, Validity

# RFC 5280 section 4.1.2.2: a serial is a positive INTEGER of at most 20 octets. 20 random bytes
# with the top bit cleared encode in exactly 20 octets (no 0x00 sign pad needed) and keep 159 bits
# of CSPRNG output, well above the 64 bits the CA/Browser Forum asks for.
_SERIAL_BYTES: Final = 20

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

# Subject attributes in the order they appear in the DN (most general first), with the API field
# that carries each and the RFC 5280 Appendix A upper bound pkilint enforces.
_SUBJECT_ATTRIBUTES: Final = (
    ("country", "country", NameOID.COUNTRY_NAME, 2),
    ("state", "state", NameOID.STATE_OR_PROVINCE_NAME, 128),
    ("locality", "locality", NameOID.LOCALITY_NAME, 128),
    ("organization", "organization", NameOID.ORGANIZATION_NAME, 64),
    ("organizational_unit", "organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME, 64),
    ("common_name", "commonName", NameOID.COMMON_NAME, 64),
)

_LDH_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_URI_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")

_CA_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)


def new_serial() -> int:
    """A fresh certificate serial: positive, at most 20 DER octets, 159 bits from the OS CSPRNG.

    Uniqueness per issuer is still enforced by the database (a unique index); randomness only makes
    a collision, and the retry it causes, practically impossible.
    """
    while True:
        value = int.from_bytes(secrets.token_bytes(_SERIAL_BYTES), "big") >> 1
        if value != 0:  # zero is not a positive INTEGER; 2**-159 odds, but cheap to rule out
            return value


def _utc_seconds(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC (cryptography does the same); fractions of a second are cut
    # because RFC 5280 section 4.1.2.5.2 forbids them in GeneralizedTime.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def resolve_validity(
    validity: Validity, *, now: datetime, backdate: timedelta, issuer_not_after: datetime | None
) -> tuple[datetime, datetime]:
    """The (notBefore, notAfter) to sign, in UTC and whole seconds.

    notBefore is the explicit one, else ``now - backdate`` (the margin absorbs relying parties whose
    clocks run behind). notAfter is the explicit one, else ``now + ttl``. A window reaching past the
    issuer's own notAfter is rejected, never shortened: the caller asked for a lifetime the issuer
    cannot vouch for, and silently trimming it would hide that.
    """
    now = _utc_seconds(now)
    if validity.ttl_seconds is not None and validity.ttl_seconds <= 0:
        message = f"must be positive, got {validity.ttl_seconds}s"
        raise PolicyViolation([FieldError("attributes.ttl", message)])
    explicit = validity.not_after is not None
    field = "attributes.notAfter" if explicit else "attributes.ttl"
    not_before = _utc_seconds(validity.not_before) if validity.not_before is not None else now - backdate
    if validity.not_after is not None:
        not_after = _utc_seconds(validity.not_after)
    elif validity.ttl_seconds is not None:
        not_after = now + timedelta(seconds=validity.ttl_seconds)
    else:
        raise PolicyViolation([FieldError("attributes.ttl", "a ttl or a notAfter is required")])
    if not_before >= not_after:
        raise PolicyViolation([FieldError(
            field, f"notBefore {not_before.isoformat()} must be earlier than notAfter {not_after.isoformat()}"
        )])
    if issuer_not_after is not None:
        limit = _utc_seconds(issuer_not_after)
        if not_after > limit:
            raise PolicyViolation([FieldError(
                field,
                f"notAfter {not_after.isoformat()} is past the issuing CA's notAfter {limit.isoformat()}; "
                "request a shorter validity or renew the CA",
            )])
    return not_before, not_after


def subject_name(subject: SubjectName, *, field_prefix: str = "attributes.") -> x509.Name:
    """The DN in the order C, ST, L, O, OU, CN; every value checked against RFC 5280's bounds."""
    errors: list[FieldError] = []
    rdns: list[x509.NameAttribute[str]] = []
    for attr, api_field, oid, upper_bound in _SUBJECT_ATTRIBUTES:
        value: str | None = getattr(subject, attr)
        if not value:
            continue
        name = field_prefix + api_field
        if oid == NameOID.COUNTRY_NAME:
            # PrintableString of exactly two letters (ISO 3166 alpha-2); cryptography would raise.
            if len(value) != 2 or not value.isascii() or not value.isalpha():
                errors.append(FieldError(name, f"{value!r} is not a two-letter ISO 3166 country code"))
                continue
            value = value.upper()
        elif len(value) > upper_bound:
            errors.append(FieldError(name, f"is {len(value)} characters long; at most {upper_bound} allowed"))
            continue
        rdns.append(x509.NameAttribute(oid, value))
    if errors:
        raise PolicyViolation(errors)
    return x509.Name(rdns)


def key_algorithm_of(private_key: PrivateKey) -> str:
    """The API name (``RSA_2048`` ... ``ED25519``) of a private key's algorithm."""
    return algorithm_of_public_key(private_key.public_key())


def _signature_algorithm(requested: str | None, issuer_key: PrivateKey) -> str:
    # The issuer's key decides what signatures are possible: a request for ECDSA under an RSA CA is
    # a policy error for the caller, not a crash in the signer.
    issuer_algorithm = key_algorithm_of(issuer_key)
    chosen = requested or DEFAULT_SIGNATURE[issuer_algorithm]
    if chosen not in SIGNATURE_ALGORITHMS:
        raise PolicyViolation([FieldError(
            "attributes.signatureAlgorithm",
            f"unknown signature algorithm {chosen!r}; use one of {', '.join(SIGNATURE_ALGORITHMS)}",
        )])
    if not signature_compatible(chosen, issuer_algorithm):
        raise PolicyViolation([FieldError(
            "attributes.signatureAlgorithm",
            f"{chosen} cannot be made by the issuing CA's {issuer_algorithm} key; use a "
            f"{signature_family(issuer_algorithm)} signature such as {DEFAULT_SIGNATURE[issuer_algorithm]}",
        )])
    return chosen


def _key_usage(names: Iterable[str], subject_family: str) -> x509.KeyUsage:
    requested = {_KEY_USAGE_ALIASES.get(name, name) for name in names}
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


def _extended_key_usage(names: Iterable[str]) -> tuple[x509.ExtendedKeyUsage, bool] | None:
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


def _check_dns_name(value: str) -> None:
    # RFC 5280 4.2.1.6 asks for RFC 1034 "preferred name syntax": LDH labels of 1 to 63 characters,
    # at most 253 in all, no trailing dot. IDNs go in as A-labels (xn--...). A whole leftmost "*"
    # label is allowed as the RFC 6125 wildcard.
    labels = value.split(".")
    if len(value) > 253:
        raise ValueError("a domain name has at most 253 characters")
    for position, label in enumerate(labels):
        if position == 0 and label == "*" and len(labels) > 1:
            continue
        if not _LDH_LABEL.fullmatch(label):
            raise ValueError(
                f"label {label!r} is not 1-63 letters, digits or inner hyphens (IDNs must be A-labels)"
            )


def _check_email(value: str) -> None:
    local, at, domain = value.rpartition("@")
    bad_local = not local or any(c.isspace() or c in "<>()[],;:\\\"" for c in local)
    if not at or bad_local or not value.isascii():
        raise ValueError("expected an ASCII mailbox such as user@example.com")
    _check_dns_name(domain)


def _check_uri(value: str) -> None:
    # RFC 5280 4.2.1.6: an absolute URI with a scheme and a scheme-specific part, never relative.
    scheme, colon, rest = value.partition(":")
    if not colon or not _URI_SCHEME.fullmatch(scheme) or not rest or not value.isascii():
        raise ValueError("expected an absolute ASCII URI with a scheme, such as https://example.com/")
    if any(c.isspace() or c in '<>"{}|\\^`' for c in value):
        raise ValueError("URIs must not contain spaces or unescaped <>\"{}|\\^` characters")
    if rest.startswith("//") and not urlsplit(value).hostname:
        raise ValueError("a URI with an authority (//) needs a host")


def _general_name(alt_name: AltName, field: str) -> x509.GeneralName:
    try:
        if alt_name.type == "dns_name":
            _check_dns_name(alt_name.value)
            return x509.DNSName(alt_name.value)
        if alt_name.type == "ip_address":
            return x509.IPAddress(ipaddress.ip_address(alt_name.value))
        if alt_name.type == "email":
            _check_email(alt_name.value)
            return x509.RFC822Name(alt_name.value)
        if alt_name.type == "uri":
            _check_uri(alt_name.value)
            return x509.UniformResourceIdentifier(alt_name.value)
    except ValueError as exc:
        message = f"{alt_name.value!r} is not a valid {alt_name.type}: {exc}"
        raise PolicyViolation([FieldError(field, message)]) from exc
    type_field = field.rsplit(".", 1)[0] + ".type"
    raise PolicyViolation([FieldError(type_field, f"unknown alt name type {alt_name.type!r}")])


def _subject_alternative_name(alt_names: Sequence[AltName]) -> x509.SubjectAlternativeName | None:
    names: list[x509.GeneralName] = []
    errors: list[FieldError] = []
    for index, alt_name in enumerate(alt_names):
        try:
            names.append(_general_name(alt_name, f"attributes.altNames[{index}].value"))
        except PolicyViolation as exc:
            errors.extend(exc.errors)
    if errors:
        raise PolicyViolation(errors)
    return x509.SubjectAlternativeName(names) if names else None


def _sign(
    builder: x509.CertificateBuilder, issuer_key: PrivateKey, signature_algorithm: str
) -> x509.Certificate:
    # hash_for returns None for Ed25519 (it hashes internally), which is what sign() expects; its
    # declared HashAlgorithm is narrower in cryptography's stubs (only SHA-2/SHA-3 are accepted).
    return builder.sign(private_key=issuer_key, algorithm=hash_for(signature_algorithm))  # type: ignore[arg-type]


def _check_within_issuer(not_after: datetime, issuer_cert: x509.Certificate | None) -> None:
    # resolve_validity already rejects this; checked again where the signature is made because a
    # certificate outliving its issuer is the one validity mistake relying parties cannot detect early.
    if issuer_cert is not None and _utc_seconds(not_after) > issuer_cert.not_valid_after_utc:
        raise PolicyViolation([FieldError(
            "attributes.ttl",
            f"notAfter {_utc_seconds(not_after).isoformat()} is past the issuing CA's notAfter "
            f"{issuer_cert.not_valid_after_utc.isoformat()}",
        )])


def _base_builder(
    *, subject: x509.Name, issuer: x509.Name, public_key: PublicKey, serial: int,
    not_before: datetime, not_after: datetime, authority_key_id: x509.SubjectKeyIdentifier,
) -> x509.CertificateBuilder:
    if not 0 < serial < 2 ** (8 * _SERIAL_BYTES - 1):
        raise ValueError("serial must be positive and fit in 20 DER octets; use new_serial()")
    # CertificateBuilder always writes version 3, which the extensions below require.
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(_utc_seconds(not_before))
        .not_valid_after(_utc_seconds(not_after))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # keyIdentifier only: issuer name + serial would pin the chain to one issuer certificate and
        # break validation after the CA is re-issued with the same key.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(authority_key_id), critical=False
        )
    )


def _issuer_key_id(issuer_cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    # Use the issuer's SKI as written in its certificate (it may not be SHA-1 of the key, e.g. for an
    # imported CA); fall back to computing it for CA certificates without one.
    try:
        return issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(issuer_cert.public_key())


def build_ca_certificate(
    *,
    subject: SubjectName,
    public_key: PublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    signature_algorithm: str | None,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
    serial: int,
) -> x509.Certificate:
    """A root CA (``issuer_cert`` None: self-signed by ``issuer_key``) or an intermediate CA.

    ``path_length`` None means no pathLenConstraint. For a root, ``issuer_key`` must be the key of
    ``public_key``.
    """
    name = subject_name(subject, field_prefix="")
    if not name:
        # RFC 5280 4.1.2.6: a CA's subject is an issuer field of what it signs, which must be non-empty.
        raise PolicyViolation([FieldError("commonName", "a CA certificate needs a subject; set commonName")])
    if path_length is not None and path_length < 0:
        raise PolicyViolation([FieldError("maxPathLength", f"must be 0 or more, got {path_length}")])
    if issuer_cert is None:
        if issuer_key.public_key() != public_key:
            raise ValueError("a root CA certificate must be signed by its own key")
        issuer_name, authority_key_id = name, x509.SubjectKeyIdentifier.from_public_key(public_key)
    else:
        _check_within_issuer(not_after, issuer_cert)
        issuer_name, authority_key_id = issuer_cert.subject, _issuer_key_id(issuer_cert)
    algorithm = _signature_algorithm(signature_algorithm, issuer_key)
    builder = (
        _base_builder(
            subject=name, issuer=issuer_name, public_key=public_key, serial=serial,
            not_before=not_before, not_after=not_after, authority_key_id=authority_key_id,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
    )
    return _sign(builder, issuer_key, algorithm)


def _end_entity_builder(
    *, template: CertificateTemplate, public_key: PublicKey, issuer: x509.Name,
    authority_key_id: x509.SubjectKeyIdentifier, serial: int, not_before: datetime, not_after: datetime,
) -> x509.CertificateBuilder:
    errors: list[FieldError] = []
    subject = x509.Name([])
    try:
        subject = subject_name(template.subject)
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    usages = set(template.key_usages)
    if template.is_ca:
        # A certificate with cA=TRUE exists to sign certificates and CRLs; RFC 5280 4.2.1.9 allows a
        # pathLenConstraint only together with keyCertSign, so the CA bits follow from isCA.
        usages |= {"key_cert_sign", "crl_sign"}
        if template.path_length is not None and template.path_length < 0:
            errors.append(FieldError("attributes.basicConstraints.pathLength", "must be 0 or more"))
    elif usages & {"key_cert_sign"}:
        errors.append(FieldError(
            "attributes.keyUsages", "key_cert_sign requires basicConstraints.isCA (RFC 5280 section 4.2.1.9)"
        ))
    family = signature_family(algorithm_of_public_key(public_key))
    # Each check runs even when an earlier one failed, so the caller sees every problem at once.
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    try:
        extensions.append((_key_usage(usages, family), True))
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    try:
        eku = _extended_key_usage(template.extended_key_usages)
        if eku is not None:
            extensions.append(eku)
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    try:
        san = _subject_alternative_name(template.alt_names)
        if san is not None:
            extensions.append((san, not subject))
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    if not subject and not template.alt_names and not errors:
        # RFC 5280 4.2.1.6: with an empty subject the identity lives only in the SAN.
        errors.append(FieldError("attributes.altNames", "a certificate without a subject needs an alt name"))
    if errors:
        raise PolicyViolation(errors)
    path_length = template.path_length if template.is_ca else None
    builder = _base_builder(
        subject=subject, issuer=issuer, public_key=public_key, serial=serial,
        not_before=not_before, not_after=not_after, authority_key_id=authority_key_id,
    ).add_extension(x509.BasicConstraints(ca=template.is_ca, path_length=path_length), critical=True)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder


def build_leaf_certificate(
    *,
    template: CertificateTemplate,
    public_key: PublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """An end-entity certificate (or a CA one when ``template.is_ca``) signed by ``issuer_key``.

    All template problems are reported together in one ``PolicyViolation``. ``template.validity`` is
    not read: the window comes from ``resolve_validity`` so the caller decides the clock.
    """
    _check_within_issuer(not_after, issuer_cert)
    algorithm = _signature_algorithm(template.signature_algorithm, issuer_key)
    builder = _end_entity_builder(
        template=template, public_key=public_key, issuer=issuer_cert.subject,
        authority_key_id=_issuer_key_id(issuer_cert), serial=serial,
        not_before=not_before, not_after=not_after,
    )
    return _sign(builder, issuer_key, algorithm)


def build_self_signed_certificate(
    *,
    template: CertificateTemplate,
    private_key: PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed end-entity certificate: issuer = subject, signed by its own key, AKI = SKI."""
    public_key = private_key.public_key()
    issuer = subject_name(template.subject)
    if not issuer:
        # The subject doubles as the issuer, and RFC 5280 4.1.2.4 requires a non-empty issuer.
        raise PolicyViolation([FieldError("attributes.commonName", "required for a self-signed certificate")])
    algorithm = _signature_algorithm(template.signature_algorithm, private_key)
    builder = _end_entity_builder(
        template=template, public_key=public_key, issuer=issuer,
        authority_key_id=x509.SubjectKeyIdentifier.from_public_key(public_key), serial=serial,
        not_before=not_before, not_after=not_after,
    )
    return _sign(builder, private_key, algorithm)


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def chain_pem(certs: Sequence[x509.Certificate]) -> str:
    """Certificates concatenated as PEM in the given order (by convention leaf-side first)."""
    return "".join(to_pem(cert) for cert in certs)
