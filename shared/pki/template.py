"""The certificate template: the exact content a signer must put in a certificate.

Produced by the pure request evaluation (``shared.policy.evaluation``) from a request plus a profile and its
policy, and consumed by the pure X.509 builder (``shared.pki.builder``). Names of key usages,
extended key usages and algorithms are the API's (DESIGN.md section 5), e.g. ``digital_signature``,
``server_auth``, ``EC_prime256v1``, ``ECDSA-SHA256``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

AltNameType = Literal["dns_name", "ip_address", "email", "uri"]


@dataclass(frozen=True)
class SubjectName:
    common_name: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    state: str | None = None
    locality: str | None = None

    def is_empty(self) -> bool:
        return not any(
            (self.common_name, self.organization, self.organizational_unit, self.country, self.state,
             self.locality)
        )


@dataclass(frozen=True)
class AltName:
    type: AltNameType
    value: str


@dataclass(frozen=True)
class Validity:
    """Either a TTL counted from signing time, or an explicit window (both ends set)."""

    ttl_seconds: int | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None


@dataclass(frozen=True)
class CertificateTemplate:
    subject: SubjectName
    alt_names: tuple[AltName, ...]
    key_usages: frozenset[str]
    extended_key_usages: frozenset[str]
    # Algorithm of the subject's key: taken from the CSR's key, or the key the worker will generate.
    key_algorithm: str
    # None means the issuer's default for its key type (ECDSA-SHA256 for P-256, RSA-SHA256, ...).
    signature_algorithm: str | None
    validity: Validity
    is_ca: bool = False
    path_length: int | None = None
    # DER SubjectPublicKeyInfo from the CSR; None means the worker generates the key pair.
    public_key_der: bytes | None = None
