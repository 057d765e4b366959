"""Certificate policies (DESIGN.md section 5): what a profile may put into a certificate.

A policy is data (``PolicyRules``, stored as JSON) plus one pure engine, ``check_template``, that
compares a fully evaluated ``CertificateTemplate`` against it and returns *every* violation, so a
caller fixes a request in one round trip instead of one error at a time.

Semantics, in the order they are applied to each value:

- subject attributes and SAN types are **default deny**: a value whose type has no rule is rejected;
- a value matching a ``denied`` pattern is rejected, whatever else matches;
- otherwise a value must match an ``allowed`` or a ``required`` pattern;
- every ``required`` pattern must be matched by at least one value of its type.

Key usages and extended key usages follow the same allowed/required/denied logic over names. Where the
policy leaves a section out, the choices are: no ``keyUsages`` / ``extendedKeyUsages`` rule means any
usage, empty algorithm lists mean any algorithm, no ``validity`` means no maximum beyond the issuer's
own lifetime, and no ``basicConstraints`` means CA certificates are denied.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from shared.errors import FieldError
from shared.keys import KEY_ALGORITHMS, SIGNATURE_ALGORITHMS
from shared.template import CertificateTemplate
from shared.ttl import format_ttl, parse_ttl

SubjectType = Literal["common_name", "organization", "organizational_unit", "country", "state", "locality"]
SanType = Literal["dns_name", "ip_address", "email", "uri"]
KeyUsageName = Literal[
    "digital_signature", "key_encipherment", "non_repudiation", "data_encipherment", "key_agreement",
    "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
]
ExtendedKeyUsageName = Literal[
    "server_auth", "client_auth", "code_signing", "email_protection", "ocsp_signing", "time_stamping",
    "any_purpose",
]

SUBJECT_TYPES: Final[tuple[str, ...]] = get_args(SubjectType)
SAN_TYPES: Final[tuple[str, ...]] = get_args(SanType)
KEY_USAGES: Final[tuple[str, ...]] = get_args(KeyUsageName)
EXTENDED_KEY_USAGES: Final[tuple[str, ...]] = get_args(ExtendedKeyUsageName)

# The API's camelCase field for each subject attribute, used in error paths.
SUBJECT_FIELDS: Final[dict[str, str]] = {t: to_camel(t) for t in SUBJECT_TYPES}

# Bounds that keep a stored policy, and the cost of checking it, small.
_MAX_PATTERNS: Final = 100
_MAX_PATTERN_LENGTH: Final = 1024


class PolicyModel(BaseModel):
    """Base of the policy's JSON models: camelCase on the wire, unknown fields rejected (typos fail)."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, extra="forbid")


def _check_patterns(patterns: list[str]) -> list[str]:
    if len(patterns) > _MAX_PATTERNS:
        raise ValueError(f"at most {_MAX_PATTERNS} patterns per list")
    for pattern in patterns:
        if not pattern or len(pattern) > _MAX_PATTERN_LENGTH:
            raise ValueError(f"pattern {pattern[:40]!r} must be 1 to {_MAX_PATTERN_LENGTH} characters")
    return patterns


class PatternRule(PolicyModel):
    """Patterns for one subject attribute or one SAN type (``*`` matches any run of characters)."""

    type: SubjectType | SanType
    allowed: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    denied: list[str] = Field(default_factory=list)

    _validate_patterns = field_validator("allowed", "required", "denied")(_check_patterns)


U = TypeVar("U", KeyUsageName, ExtendedKeyUsageName)


class UsageRule(PolicyModel, Generic[U]):
    """Allowed, required and denied names of key usages (or of extended key usages)."""

    allowed: list[U] = Field(default_factory=list)
    required: list[U] = Field(default_factory=list)
    denied: list[U] = Field(default_factory=list)


# Concrete subclasses give the two rules readable names in /openapi.json.
class KeyUsageRule(UsageRule[KeyUsageName]):
    """Key usage names: digital_signature, key_encipherment, ... (DESIGN.md section 5)."""


class ExtendedKeyUsageRule(UsageRule[ExtendedKeyUsageName]):
    """Extended key usage names: server_auth, client_auth, ... (DESIGN.md section 5)."""


class AlgorithmRules(PolicyModel):
    """Accepted signature and subject-key algorithms; an empty list accepts any."""

    signature: list[str] = Field(default_factory=list)
    key_algorithm: list[str] = Field(default_factory=list)

    @field_validator("signature")
    @classmethod
    def _known_signatures(cls, names: list[str]) -> list[str]:
        return _known(names, SIGNATURE_ALGORITHMS, "signature algorithm")

    @field_validator("key_algorithm")
    @classmethod
    def _known_keys(cls, names: list[str]) -> list[str]:
        return _known(names, KEY_ALGORITHMS, "key algorithm")


def _known(names: list[str], known: Sequence[str], what: str) -> list[str]:
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; use one of {', '.join(known)}")
    return names


class ValidityRule(PolicyModel):
    """The longest validity a certificate may have, as a TTL string such as ``"90d"``."""

    max: str

    @field_validator("max")
    @classmethod
    def _valid_ttl(cls, value: str) -> str:
        parse_ttl(value)
        return value

    @property
    def max_seconds(self) -> int:
        return parse_ttl(self.max)


class BasicConstraintsRule(PolicyModel):
    """Whether CA certificates may (or must) be issued, and the deepest path length they may allow."""

    # Explicit alias: the generator would produce "isCa", the API spells it "isCA".
    is_ca: Literal["allowed", "required", "denied"] = Field(default="denied", alias="isCA")
    max_path_length: int | None = Field(default=None, ge=0, le=100)


class PolicyRules(PolicyModel):
    """Everything a policy says about certificates: what is stored as the policy's JSON rules."""

    subject: list[PatternRule] = Field(default_factory=list)
    sans: list[PatternRule] = Field(default_factory=list)
    key_usages: KeyUsageRule | None = None
    extended_key_usages: ExtendedKeyUsageRule | None = None
    algorithms: AlgorithmRules = Field(default_factory=AlgorithmRules)
    validity: ValidityRule | None = None
    basic_constraints: BasicConstraintsRule = Field(default_factory=BasicConstraintsRule)

    @field_validator("subject")
    @classmethod
    def _subject_types(cls, rules: list[PatternRule]) -> list[PatternRule]:
        return _one_rule_per_type(rules, SUBJECT_TYPES, "subject")

    @field_validator("sans")
    @classmethod
    def _san_types(cls, rules: list[PatternRule]) -> list[PatternRule]:
        return _one_rule_per_type(rules, SAN_TYPES, "SAN")

    @field_validator("key_usages", "extended_key_usages")
    @classmethod
    def _coherent_usages(cls, rule: UsageRule[Any] | None) -> UsageRule[Any] | None:
        if rule is not None:
            contradicted = sorted(set(rule.denied) & (set(rule.allowed) | set(rule.required)))
            if contradicted:
                raise ValueError(f"{', '.join(contradicted)} both denied and allowed/required")
        return rule


def _one_rule_per_type(rules: list[PatternRule], types: Sequence[str], what: str) -> list[PatternRule]:
    # One rule per type keeps "the rule for dns_name" a single, reviewable thing.
    seen: set[str] = set()
    for rule in rules:
        if rule.type not in types:
            raise ValueError(f"{rule.type!r} is not a {what} type; use one of {', '.join(types)}")
        if rule.type in seen:
            raise ValueError(f"more than one {what} rule for {rule.type!r}; merge them into one")
        seen.add(rule.type)
    return rules


def match_pattern(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches ``pattern`` as a whole; ``*`` matches any run of characters.

    ``*`` also matches dots and the empty string, so ``*.example.com`` matches ``a.b.example.com`` (and
    ``.example.com``) but never ``example.com.evil.org``: the pattern is anchored at both ends. No
    other character is special. Written as a two-pointer glob rather than a regex so that a pattern
    full of stars costs O(len(pattern) * len(value)) instead of backtracking exponentially.
    """
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    p = v = 0
    star = -1  # position of the last '*' seen in the pattern
    resume = 0  # position in the value that star currently absorbs up to
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif p < len(pattern) and pattern[p] == value[v]:
            p += 1
            v += 1
        elif star >= 0:
            # Let the last star absorb one more character and retry from just after it.
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _matches(san_or_subject_type: str, pattern: str, value: str) -> bool:
    """Pattern matching for one type: DNS names and emails case-insensitively; IPs also by CIDR."""
    if san_or_subject_type == "ip_address" and "/" in pattern:
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return match_pattern(pattern, value, ignore_case=san_or_subject_type in ("dns_name", "email"))


def _listing(patterns: Iterable[str]) -> str:
    return ", ".join(patterns) or "none"


def _check_values(
    kind: str, rule: PatternRule | None, values: list[tuple[str, str]], required_field: str
) -> list[FieldError]:
    """Check the (field path, value) pairs of one subject attribute or SAN type against its rule."""
    errors: list[FieldError] = []
    for field, value in values:
        if rule is None:
            errors.append(FieldError(field, f"{kind} {value!r} is not allowed: the policy has no rule for "
                                            f"{kind}"))
            continue
        denied = next((d for d in rule.denied if _matches(kind, d, value)), None)
        if denied is not None:
            errors.append(FieldError(field, f"{kind} {value!r} matches denied pattern {denied!r}"))
        elif not any(_matches(kind, p, value) for p in [*rule.allowed, *rule.required]):
            errors.append(FieldError(field, f"{kind} {value!r} matches no allowed pattern "
                                            f"(allowed: {_listing([*rule.allowed, *rule.required])})"))
    for pattern in rule.required if rule else []:
        if not any(_matches(kind, pattern, value) for _, value in values):
            errors.append(FieldError(required_field, f"{kind} matching required pattern {pattern!r} is "
                                                     "missing"))
    return errors


def _check_usages(
    kind: str, field: str, rule: UsageRule[Any] | None, requested: frozenset[str]
) -> list[FieldError]:
    if rule is None:
        return []
    errors: list[FieldError] = []
    for name in sorted(requested):
        if name in rule.denied:
            errors.append(FieldError(field, f"{kind} {name!r} is denied by the policy"))
        elif name not in rule.allowed and name not in rule.required:
            errors.append(FieldError(field, f"{kind} {name!r} is not allowed "
                                            f"(allowed: {_listing([*rule.allowed, *rule.required])})"))
    for name in rule.required:
        if name not in requested:
            errors.append(FieldError(field, f"required {kind} {name!r} is missing"))
    return errors


def signature_algorithm_allowed(rules: PolicyRules, algorithm: str) -> bool:
    """Whether the policy accepts ``algorithm``; for the worker once it resolves an issuer's default."""
    return not rules.algorithms.signature or algorithm in rules.algorithms.signature


def check_template(rules: PolicyRules, template: CertificateTemplate) -> list[FieldError]:
    """Every way ``template`` breaks ``rules``, as field errors in the API's camelCase paths.

    An empty list means the policy allows the certificate. A template whose ``signature_algorithm`` is
    None is not checked against the signature list here: the algorithm is the issuer's default, which
    only the worker knows; it must call ``signature_algorithm_allowed`` with the resolved name.
    """
    errors: list[FieldError] = []

    subject_rules: dict[str, PatternRule] = {rule.type: rule for rule in rules.subject}
    for kind in SUBJECT_TYPES:
        field = f"attributes.{SUBJECT_FIELDS[kind]}"
        value: str | None = getattr(template.subject, kind)
        values = [(field, value)] if value else []
        errors += _check_values(kind, subject_rules.get(kind), values, field)

    san_rules: dict[str, PatternRule] = {rule.type: rule for rule in rules.sans}
    for kind in SAN_TYPES:
        values = [(f"attributes.altNames[{i}]", alt.value)
                  for i, alt in enumerate(template.alt_names) if alt.type == kind]
        # Without a rule, each value is reported once; with one, required patterns are checked too.
        errors += _check_values(kind, san_rules.get(kind), values, "attributes.altNames")

    errors += _check_usages("key usage", "attributes.keyUsages", rules.key_usages, template.key_usages)
    errors += _check_usages("extended key usage", "attributes.extendedKeyUsages", rules.extended_key_usages,
                            template.extended_key_usages)

    allowed_keys = rules.algorithms.key_algorithm
    if allowed_keys and template.key_algorithm not in allowed_keys:
        errors.append(FieldError("attributes.keyAlgorithm", f"key algorithm {template.key_algorithm!r} is "
                                 f"not allowed (allowed: {_listing(allowed_keys)})"))
    signature = template.signature_algorithm
    if signature is not None and not signature_algorithm_allowed(rules, signature):
        errors.append(FieldError("attributes.signatureAlgorithm", f"signature algorithm {signature!r} is "
                                 f"not allowed (allowed: {_listing(rules.algorithms.signature)})"))

    errors += _check_validity(rules, template)
    errors += _check_basic_constraints(rules.basic_constraints, template)
    return errors


def _check_validity(rules: PolicyRules, template: CertificateTemplate) -> list[FieldError]:
    if rules.validity is None:
        return []
    limit = rules.validity.max_seconds
    validity = template.validity
    maximum = f"the policy's maximum validity of {rules.validity.max}"
    if validity.ttl_seconds is not None and validity.ttl_seconds > limit:
        return [FieldError("attributes.ttl", f"ttl {format_ttl(validity.ttl_seconds)} exceeds {maximum}")]
    if validity.not_before is not None and validity.not_after is not None:
        span = math.ceil((validity.not_after - validity.not_before).total_seconds())
        if span > limit:
            return [FieldError("attributes.notAfter", f"validity window (notBefore to notAfter) of "
                                                      f"{format_ttl(span)} exceeds {maximum}")]
    return []


def _check_basic_constraints(rule: BasicConstraintsRule, template: CertificateTemplate) -> list[FieldError]:
    field = "attributes.basicConstraints"
    if template.is_ca and rule.is_ca == "denied":
        return [FieldError(f"{field}.isCA", "CA certificates are denied by the policy (isCA: denied)")]
    if not template.is_ca and rule.is_ca == "required":
        return [FieldError(f"{field}.isCA", "the policy requires a CA certificate (isCA: required)")]
    if template.is_ca and rule.max_path_length is not None:
        if template.path_length is None:
            return [FieldError(f"{field}.pathLength", "an unlimited path length exceeds the policy's "
                               f"maxPathLength of {rule.max_path_length}")]
        if template.path_length > rule.max_path_length:
            return [FieldError(f"{field}.pathLength", f"path length {template.path_length} exceeds the "
                               f"policy's maxPathLength of {rule.max_path_length}")]
    return []
