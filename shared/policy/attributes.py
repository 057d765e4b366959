"""The attributes of a certificate request as the API receives them, and a profile's defaults.

Pydantic models with camelCase aliases and format checks (RFC 5280 length bounds, host names, IP
addresses, email addresses, URIs, TTLs). ``shared.pki.csr`` reads a CSR's names into the same models, and
``shared.policy.evaluation`` turns them, with a profile and its policy, into a certificate template.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.camel import CamelModel
from shared.policy.rules import ExtendedKeyUsageName, KeyUsageName, SanType
from shared.policy.ttl import parse_ttl

# Same names as shared.pki.keys.KEY_ALGORITHMS / SIGNATURE_ALGORITHMS (a unit test keeps them equal);
# spelled as Literals so that /openapi.json lists them.
KeyAlgorithmName = Literal[
    "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1", "ED25519"
]
SignatureAlgorithmName = Literal[
    "RSA-SHA256", "RSA-SHA384", "RSA-SHA512", "ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512", "ED25519"
]

# A service limit, not a policy: more names is refused as malformed (400) before any policy runs.
MAX_ALT_NAMES: Final = 100
DEFAULT_KEY_ALGORITHM: Final = "EC_prime256v1"


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _valid_ttl(value: str) -> str:
    parse_ttl(value)
    return value


def _representable_in_utc(value: datetime) -> datetime:
    # 9999-12-31T23:59:59-14:00 is a valid timestamp, but past datetime.max once in UTC, where every
    # comparison and the database take it.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be between years 1 and 9999 in UTC") from None
    return value


# An RFC 3339 timestamp with an offset that stays within years 1-9999 in UTC (kept as given).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]

# Upper bounds of RFC 5280 appendix A (ub-common-name, ub-organization-name, ub-state-name, ...).
_Printable = AfterValidator(_no_control_characters)
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64), _Printable]
Text128 = Annotated[str, StringConstraints(min_length=1, max_length=128), _Printable]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$"), AfterValidator(str.upper)]
Ttl = Annotated[str, AfterValidator(_valid_ttl)]

_LABEL: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")


def _dns_name(value: str, *, wildcard: bool) -> str:
    """A lower-cased host name of LDH labels; ``*.`` only as the whole leftmost label."""
    if not value.isascii():
        raise ValueError(f"{value!r} is not ASCII; write internationalized names in their 'xn--' form")
    name = value.lower()
    host = name[2:] if wildcard and name.startswith("*.") else name
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError(f"{value!r} is not a valid DNS name")
    return name


def _alt_name_value(kind: str, value: str) -> str:
    """``value`` checked (and normalized: DNS lower-cased, IPs canonical) for an alt name of ``kind``."""
    if kind == "dns_name":
        return _dns_name(value, wildcard=True)
    if kind == "ip_address":
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            # The certificate would hold the bare address (the zone is dropped on encoding) while the
            # policy saw the zone too: refuse what cannot be represented rather than drop it.
            raise ValueError(f"{value!r} has an IPv6 zone index ('%...'), which a certificate cannot carry")
        return str(address)
    if kind == "email":
        local, at, domain = value.partition("@")
        if not at or not local or "@" in domain or len(value) > 255 or not value.isascii() or " " in local:
            raise ValueError(f"{value!r} is not an email address (local@domain, ASCII)")
        return f"{local}@{_dns_name(domain, wildcard=False)}"
    if not value.isascii() or not _URI.fullmatch(value):
        raise ValueError(f"{value!r} is not an absolute URI with a scheme (e.g. spiffe://example.org/x)")
    return value


class AltNameInput(CamelModel):
    type: SanType
    value: str = Field(min_length=1, max_length=2048)

    @field_validator("value")
    @classmethod
    def _valid_for_type(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        return value if kind is None else _alt_name_value(kind, value)


class BasicConstraintsInput(CamelModel):
    is_ca: bool = Field(default=False, alias="isCA")
    path_length: int | None = Field(default=None, ge=0, le=100)


class SubjectFields(CamelModel):
    """The subject attributes a request, a profile default or a CSR can carry."""

    common_name: Text64 | None = None
    organization: Text64 | None = None
    organizational_unit: Text64 | None = None
    country: Country | None = None
    state: Text128 | None = None
    locality: Text128 | None = None


class IssueAttributes(SubjectFields):
    """The ``attributes`` of ``POST /certificates``: what the caller asks to be in the certificate."""

    alt_names: list[AltNameInput] = Field(default_factory=list, max_length=MAX_ALT_NAMES)
    key_usages: list[KeyUsageName] | None = None
    extended_key_usages: list[ExtendedKeyUsageName] | None = None
    key_algorithm: KeyAlgorithmName | None = None
    signature_algorithm: SignatureAlgorithmName | None = None
    ttl: Ttl | None = None
    not_before: UtcDatetime | None = None
    not_after: UtcDatetime | None = None
    basic_constraints: BasicConstraintsInput | None = None

    @model_validator(mode="after")
    def _one_validity(self) -> IssueAttributes:
        window = (self.not_before, self.not_after)
        if self.ttl is not None and any(end is not None for end in window):
            raise ValueError("give either ttl or notBefore+notAfter, not both")
        if (self.not_before is None) != (self.not_after is None):
            raise ValueError("notBefore and notAfter must be given together")
        if self.not_before is not None and self.not_after is not None and self.not_after <= self.not_before:
            raise ValueError("notAfter must be later than notBefore")
        return self


class ProfileDefaults(SubjectFields):
    """What a profile puts in a certificate when the request does not say.

    ``ttlDays`` is upstream's validity default; ``ttl`` (a duration such as ``30d``) is our older
    spelling, kept as an extension (``ttlDays`` wins when both are given).
    """

    ttl_days: int | None = Field(default=None, ge=1, le=36_500)
    ttl: Ttl | None = None
    key_algorithm: KeyAlgorithmName | None = None
    signature_algorithm: SignatureAlgorithmName | None = None
    key_usages: list[KeyUsageName] | None = None
    extended_key_usages: list[ExtendedKeyUsageName] | None = None
    basic_constraints: BasicConstraintsInput | None = None


class ApiConfig(CamelModel):
    auto_renew: bool = False
    renew_before_days: int | None = Field(default=None, ge=1, le=30)
