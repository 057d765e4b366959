"""What the real clients' decoders accept, written down from their sources. Not a test module.

The KMS agent and the cert-manager issuer are Go programs: they decode every answer with
``encoding/json`` into the structs below (copied field by field from their sources, named in each
test module's docstring). Go's decoder ignores keys a struct does not declare and takes a JSON
``null`` for any field as "leave it zero", but a declared field of the wrong JSON type fails the whole
decode, so the client sees no answer at all. ``go_decode_errors`` applies exactly those rules: an
answer that passes it is one the Go client decodes.

Types: ``"string"``, ``"int"`` (a JSON number without fraction or exponent, what Go's ``int`` and
``int64`` take), ``"bool"``, ``"time"`` (Go's ``time.Time``, which parses RFC 3339 and nothing
else), ``"[]string"``, ``"any"``, a nested struct (a dict), or ``Slice(struct)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes

# Go's time.Time.UnmarshalJSON: time.Parse(time.RFC3339, s), which also takes fractional seconds.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Slice:
    item: GoType


GoType: TypeAlias = "str | dict[str, GoType] | Slice"


def go_decode_errors(value: Any, shape: GoType, path: str = "$") -> list[str]:
    """Why Go's encoding/json would fail to decode ``value`` into ``shape`` (empty: it decodes)."""
    if value is None or shape == "any":
        return []
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: a struct needs an object, got {value!r}"]
        errors: list[str] = []
        for key, field in shape.items():
            if key in value:
                errors += go_decode_errors(value[key], field, f"{path}.{key}")
        return errors
    if isinstance(shape, Slice):
        if not isinstance(value, list):
            return [f"{path}: a slice needs an array, got {value!r}"]
        return [e for i, item in enumerate(value) for e in go_decode_errors(item, shape.item, f"{path}[{i}]")]
    ok = {
        "string": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "time": isinstance(value, str) and RFC3339.match(value) is not None,
        "[]string": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[shape]
    return [] if ok else [f"{path}: Go {shape} cannot take {value!r}"]


def assert_go_decodes(value: Any, shape: GoType) -> None:
    errors = go_decode_errors(value, shape)
    assert not errors, (errors, value)


# -- the statuses on the wire (DESIGN.md 5.1) --------------------------------------------------------

# Upstream's certificate request statuses: the only ones the service may put on the wire.
UPSTREAM_REQUEST_STATUSES = frozenset({"pending", "pending_approval", "issued", "failed", "rejected"})


# -- PEM -----------------------------------------------------------------------------------------------

def certificates_in(pem: str | None) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order (none for an empty or null one)."""
    if not pem or not pem.strip():
        return []
    return x509.load_pem_x509_certificates(pem.encode())


def fingerprints(pem: str | None) -> list[bytes]:
    return [c.fingerprint(hashes.SHA256()) for c in certificates_in(pem)]


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject
