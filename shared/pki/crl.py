"""Building a CRL (RFC 5280 section 5): a pure function; only a worker calls it, with a CA key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared.pki.keys import PrivateKey

# The nine upstream revocation reasons and their RFC 5280 CRLReason (5.3.1). UNSPECIFIED is left out of
# the entry (RFC 5280: the reason code extension SHOULD be absent rather than say unspecified).
REASONS: dict[str, x509.ReasonFlags | None] = {
    "UNSPECIFIED": None,
    "KEY_COMPROMISE": x509.ReasonFlags.key_compromise,
    "CA_COMPROMISE": x509.ReasonFlags.ca_compromise,
    "AFFILIATION_CHANGED": x509.ReasonFlags.affiliation_changed,
    "SUPERSEDED": x509.ReasonFlags.superseded,
    "CESSATION_OF_OPERATION": x509.ReasonFlags.cessation_of_operation,
    "CERTIFICATE_HOLD": x509.ReasonFlags.certificate_hold,
    "PRIVILEGE_WITHDRAWN": x509.ReasonFlags.privilege_withdrawn,
    "A_A_COMPROMISE": x509.ReasonFlags.aa_compromise,
}


@dataclass(frozen=True)
class CrlEntry:
    serial: int
    revoked_at: datetime
    reason: str | None  # one of REASONS


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """SHA-256, or the hash matching a larger curve; none for Ed25519 (it hashes internally)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    return hashes.SHA256()


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def build_crl(*, issuer_cert: x509.Certificate, issuer_key: PrivateKey, crl_number: int, this_update: datetime,
              next_update: datetime, entries: Sequence[CrlEntry]) -> x509.CertificateRevocationList:
    """A v2 CRL with CRL number and AKI (from the issuer's SKI), one entry per revoked serial."""
    this_update, next_update = _seconds(this_update), _seconds(next_update)
    if not this_update < next_update:
        raise ValueError("a CRL's thisUpdate must precede its nextUpdate")
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    for entry in entries:
        revoked = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(
            _seconds(entry.revoked_at))
        flag = REASONS.get(entry.reason or "UNSPECIFIED")
        if flag is not None:
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(issuer_key, _hash_for(issuer_key))  # type: ignore[arg-type]
