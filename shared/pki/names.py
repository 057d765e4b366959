"""Names in a certificate: the subject DN and the subject alternative names.

Pure functions from the template's ``SubjectName`` and ``AltName`` values to ``cryptography``'s
``x509.Name`` and ``x509.SubjectAlternativeName``, checked against RFC 5280 (upper bounds, DNS, email
and URI syntax) so that pkilint finds nothing to refuse. A problem is a ``PolicyViolation`` naming the
API field; every bad alt name is reported at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.errors import FieldError, PolicyViolation
from shared.pki.template import AltName, SubjectName

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


def subject_alternative_name(alt_names: Sequence[AltName]) -> x509.SubjectAlternativeName | None:
    """The SAN extension of ``alt_names``, or None when there are none; every invalid name reported at once."""
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
