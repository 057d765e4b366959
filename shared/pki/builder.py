"""Building X.509 certificates: a thin layer of pure functions over ``cryptography``'s builder.

Data in (a ``CertificateTemplate`` or a CA's subject, keys, a validity window, a serial), a signed
``x509.Certificate`` out. No I/O, no clock, no globals: the caller passes ``now`` and the serial, so
the worker can reserve the serial in the database before signing (DESIGN.md invariant 3).

Every certificate built here must pass pkilint's RFC 5280 linter with no ERROR or FATAL finding and
chain-verify with OpenSSL and ``cryptography.x509.verification`` (DESIGN.md section 6). The checks
here and in ``shared.pki.names`` (subject and alt names) and ``shared.pki.extensions`` (key usages) reject,
with a ``PolicyViolation`` naming the field, any input that would produce a certificate those checkers
refuse, rather than silently dropping or adding content.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.errors import FieldError, PolicyViolation
from shared.pki.extensions import extended_key_usage, key_usage
from shared.pki.keys import (
    DEFAULT_SIGNATURE,
    SIGNATURE_ALGORITHMS,
    PrivateKey,
    PublicKey,
    algorithm_of_public_key,
    hash_for,
    signature_compatible,
    signature_family,
)
from shared.pki.names import subject_alternative_name, subject_name
from shared.pki.template import CertificateTemplate, SubjectName, Validity

# RFC 5280 section 4.1.2.2: a serial is a positive INTEGER of at most 20 octets. 20 random bytes
# with the top bit cleared encode in exactly 20 octets (no 0x00 sign pad needed) and keep 159 bits
# of CSPRNG output, well above the 64 bits the CA/Browser Forum asks for.
_SERIAL_BYTES: Final = 20

_CA_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)


@dataclass(frozen=True)
class IssuerUrls:
    """Where relying parties find the issuer's CRL, certificate and OCSP responder: the CRL distribution
    point and the AIA caIssuers and OCSP URLs every certificate the issuer signs carries (DESIGN.md 5.7)."""

    crl: str
    ca_issuers: str
    ocsp: str


def issuer_urls(public_url: str | None, ca_id: object) -> IssuerUrls | None:
    """The upstream paths under ``KMS_PUBLIC_URL`` for the CA ``ca_id``; None without a public URL.
    (The CRL id and the CA-certificate id of those paths are the CA's id.)"""
    if not public_url:
        return None
    base = public_url.rstrip("/") + "/api/v1/cert-manager"
    return IssuerUrls(crl=f"{base}/crl/{ca_id}/der",
                      ca_issuers=f"{base}/ca/internal/{ca_id}/certificates/{ca_id}/der",
                      ocsp=f"{base}/ocsp/{ca_id}")


def _with_issuer_urls(builder: x509.CertificateBuilder, urls: IssuerUrls | None) -> x509.CertificateBuilder:
    if urls is None:
        return builder
    return (
        builder
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
        .add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(urls.ocsp)),
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(urls.ca_issuers))]), critical=False)
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
    validity: Validity, *, now: datetime, backdate: timedelta, issuer_not_after: datetime | None,
    issuer_not_before: datetime | None = None,
) -> tuple[datetime, datetime]:
    """The (notBefore, notAfter) to sign, in UTC and whole seconds.

    notBefore is the explicit one, else ``now - backdate`` (the margin absorbs relying parties whose
    clocks run behind), never earlier than the issuer's own notBefore. notAfter is the explicit one,
    else ``now + ttl``. A window reaching outside the issuer's own is rejected, never shortened: the
    caller asked for a lifetime the issuer cannot vouch for (an explicit notBefore before the issuer
    existed, a notAfter past its end), and silently trimming it would hide that.
    """
    now = _utc_seconds(now)
    if validity.ttl_seconds is not None and validity.ttl_seconds <= 0:
        message = f"must be positive, got {validity.ttl_seconds}s"
        raise PolicyViolation([FieldError("attributes.ttl", message)])
    explicit = validity.not_after is not None
    field = "attributes.notAfter" if explicit else "attributes.ttl"
    not_before = _utc_seconds(validity.not_before) if validity.not_before is not None else now - backdate
    if issuer_not_before is not None:
        start = _utc_seconds(issuer_not_before)
        if validity.not_before is not None and not_before < start:
            raise PolicyViolation([FieldError(
                "attributes.notBefore",
                f"notBefore {not_before.isoformat()} is before the issuing CA's notBefore {start.isoformat()}; "
                "a certificate cannot be valid before its issuer")])
        not_before = max(not_before, start)
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
    urls: IssuerUrls | None = None,
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
    # A root is its own anchor: no issuer's CRL or certificate to point at.
    return _sign(_with_issuer_urls(builder, urls if issuer_cert is not None else None), issuer_key, algorithm)


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
        extensions.append((key_usage(usages, family), True))
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    try:
        eku = extended_key_usage(template.extended_key_usages)
        if eku is not None:
            extensions.append(eku)
    except PolicyViolation as exc:
        errors.extend(exc.errors)
    try:
        san = subject_alternative_name(template.alt_names)
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
    urls: IssuerUrls | None = None,
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
    return _sign(_with_issuer_urls(builder, urls), issuer_key, algorithm)


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


def build_ocsp_responder_certificate(
    *, public_key: PublicKey, issuer_cert: x509.Certificate, issuer_key: PrivateKey, serial: int,
    not_before: datetime, not_after: datetime,
) -> x509.Certificate:
    """A delegated OCSP signing certificate (RFC 6960 4.2.2.2) for the CA ``issuer_cert``: issued by the
    CA itself, EKU id-kp-OCSPSigning only, digitalSignature only, and id-pkix-ocsp-nocheck (4.2.2.2.1), so
    relying parties do not ask about the responder's own status. Short-lived for that reason: a stolen
    responder key forges answers only until the certificate expires.

    Its subject is the CA's, with the common name ``<CA common name> OCSP Responder``."""
    _check_within_issuer(not_after, issuer_cert)
    cn = issuer_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    base = str(cn[0].value) if cn else "CA"
    name = f"{base[:64 - len(' OCSP Responder')]} OCSP Responder"
    others = [a for a in issuer_cert.subject if a.oid != x509.NameOID.COMMON_NAME]
    subject = x509.Name([*others, x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    family = signature_family(algorithm_of_public_key(public_key))
    builder = (
        _base_builder(subject=subject, issuer=issuer_cert.subject, public_key=public_key, serial=serial,
                      not_before=not_before, not_after=not_after, authority_key_id=_issuer_key_id(issuer_cert))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage({"digital_signature"}, family), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    return _sign(builder, issuer_key, _signature_algorithm(None, issuer_key))


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def chain_pem(certs: Sequence[x509.Certificate]) -> str:
    """Certificates concatenated as PEM in the given order (by convention leaf-side first)."""
    return "".join(to_pem(cert) for cert in certs)
