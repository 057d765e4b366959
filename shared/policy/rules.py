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

How values are compared (DESIGN.md 5.4):

- ``*`` in a pattern matches any run of characters, dots included, and the pattern is anchored at both
  ends. No other character is special.
- Common names, DNS names and e-mail addresses are compared case-insensitively (the whole address:
  mail systems treat local parts that way in practice, and a denial must not be dodged by
  ``Admin@`` against ``admin@``). A name is also compared without its trailing dots, the form DNS
  treats as the same name; a value matches when any of its forms does, for allowed and denied alike.
  Other subject attributes and URIs are compared exactly.
- A **wildcard** value is a request for every name it covers. A DNS name or a common name with a
  ``*`` in it is one (a DNS alt name may hold it only as the whole leftmost label): a ``*`` that is
  a whole label stands for any non-empty run of characters without a dot, one inside a label
  (``f*.example.com``, which some clients honour in a common name) for any such run, empty
  included. A denied pattern that matches *any* covered name rejects the value, decided exactly by
  ``pattern_matches_a_covered_name`` (no sampling). The covered labels are deliberately wider than
  LDH labels (any character but a dot), and a ``*`` in a common name counts wherever it stands:
  a denial errs toward refusing. Allowed and required patterns are matched against the value as
  written, so ``allowed: ["*.example.com"]`` admits ``*.example.com``.
- ``allowWildcards`` (on ``dns_name`` and ``common_name`` rules; default ``true``, so policies
  written before it keep working) set to ``false`` rejects any value with a ``*`` in it.
- IP addresses match a CIDR network (``10.0.0.0/8``), an address, or a ``*`` pattern over the
  address's text. An IPv6 address that embeds an IPv4 one, IPv4-mapped (``::ffff:10.0.0.1``) or the
  deprecated IPv4-compatible form (``::10.0.0.1``), is also matched as that IPv4 address, and a
  network inside ``::ffff:0:0/96`` also as its IPv4 network, so ``denied: ["10.0.0.0/8"]`` refuses
  ``::ffff:10.0.0.1``. Patterns that are none of the three are refused when the policy is saved;
  should one reach the matcher anyway, a denied pattern that cannot be read rejects every value
  (the matcher never fails open) and an allowed one admits none.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.errors import FieldError
from shared.pki.keys import KEY_ALGORITHMS, SIGNATURE_ALGORITHMS
from shared.pki.template import CertificateTemplate
from shared.policy.ttl import format_ttl, parse_policy_max

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
# Validation context for policies read back from the database (``model_validate(..., context=STORED)``).
STORED: Final = {"stored": True}


class PolicyModel(BaseModel):
    """Base of the policy's JSON models: camelCase on the wire, unknown fields ignored (DESIGN.md 5.1)."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, extra="ignore")


def _check_patterns(patterns: list[str]) -> list[str]:
    if len(patterns) > _MAX_PATTERNS:
        raise ValueError(f"at most {_MAX_PATTERNS} patterns per list")
    for pattern in patterns:
        if not pattern or len(pattern) > _MAX_PATTERN_LENGTH:
            raise ValueError(f"pattern {pattern[:40]!r} must be 1 to {_MAX_PATTERN_LENGTH} characters")
    return patterns


# The types whose values can hold a wildcard label, and so the types ``allowWildcards`` applies to.
_WILDCARD_TYPES: Final = ("dns_name", "common_name")
# What a ``*`` pattern for IP addresses may hold besides the star: the characters of address text.
_IP_GLOB: Final = re.compile(r"[0-9a-fA-F.:*]+")


def _ip_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be an ip_address pattern, or None when it can."""
    if "%" in pattern:
        return f"pattern {pattern!r} has an IPv6 zone index, which a certificate cannot carry"
    if "/" in pattern:
        try:
            ipaddress.ip_network(pattern, strict=False)
        except ValueError as exc:
            return f"pattern {pattern!r} is not a CIDR network such as 10.0.0.0/8: {exc}"
        return None
    if "*" in pattern:
        if not _IP_GLOB.fullmatch(pattern):
            return f"pattern {pattern!r} may hold only address characters (0-9, a-f, '.', ':') and '*'"
        return None
    try:
        ipaddress.ip_address(pattern)
    except ValueError:
        return (f"pattern {pattern!r} is not an IP address, a CIDR network (10.0.0.0/8) or a '*' pattern "
                "of address characters")
    return None


class PatternRule(PolicyModel):
    """Patterns for one subject attribute or one SAN type (``*`` matches any run of characters).

    ``allow_wildcards`` (``allowWildcards``) is an extension to the upstream rule: left out of the
    JSON when it was not given, so upstream clients read the rules they wrote.
    """

    type: SubjectType | SanType
    allowed: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    denied: list[str] = Field(default_factory=list)
    allow_wildcards: bool = True

    _validate_patterns = field_validator("allowed", "required", "denied")(_check_patterns)

    @field_validator("allowed", "required", "denied")
    @classmethod
    def _ip_patterns_parse(cls, patterns: list[str], info: ValidationInfo) -> list[str]:
        # An unreadable CIDR used to match nothing, so a denial written with a typo let everything
        # through: refuse it here, where the author can still fix it.
        # A policy saved before this check is read back as it is (the matcher fails closed on it).
        if info.data.get("type") == "ip_address" and not (info.context or {}).get("stored"):
            problems = [problem for problem in map(_ip_pattern_problem, patterns) if problem]
            if problems:
                raise ValueError("; ".join(problems))
        return patterns

    @model_validator(mode="after")
    def _wildcards_only_where_they_mean_something(self) -> PatternRule:
        if not self.allow_wildcards and self.type not in _WILDCARD_TYPES:
            raise ValueError(f"allowWildcards applies to {' and '.join(_WILDCARD_TYPES)} rules only, "
                             f"not to {self.type}")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_allow_wildcards(self, handler: SerializerFunctionWrapHandler,
                                    info: SerializationInfo) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if "allow_wildcards" not in self.model_fields_set:
            data.pop("allowWildcards" if info.by_alias else "allow_wildcards", None)
        return data


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
    """The longest validity a certificate may have: ``<n>[hdmy]`` such as ``"90d"`` or ``"6m"``, where
    ``m`` is months of 30 days, as upstream reads it (shared.policy.ttl.parse_policy_max)."""

    max: str

    @field_validator("max")
    @classmethod
    def _valid_max(cls, value: str) -> str:
        parse_policy_max(value)
        return value

    @property
    def max_seconds(self) -> int:
        return parse_policy_max(self.max)


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


# -- how values are compared (the module docstring states the rules) ---------------------------------

# Types compared case-insensitively and without trailing dots (DESIGN.md 5.4).
_NAME_TYPES: Final = ("common_name", "dns_name", "email")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _forms(kind: str, value: str) -> tuple[str, ...]:
    """The spellings of ``value`` that name the same thing, in the case its patterns are compared in."""
    if kind not in _NAME_TYPES:
        return (value,)
    lowered = value.lower()
    bare = lowered.rstrip(".")
    return (lowered, bare) if bare and bare != lowered else (lowered,)


def _is_wildcard(kind: str, value: str) -> bool:
    return kind in _WILDCARD_TYPES and "*" in value


# Tokens of a wildcard value besides its literal characters: exactly one character that is not a dot,
# and any run (empty included) of characters that are not dots.
_ONE: Final = 0
_RUN: Final = 1


def _wildcard_tokens(wildcard: str) -> list[str | int]:
    tokens: list[str | int] = []
    for index, label in enumerate(wildcard.split(".")):
        if index:
            tokens.append(".")
        if label == "*":
            tokens += [_ONE, _RUN]  # a whole-label star never stands for an empty label
        else:
            tokens += [_RUN if char == "*" else char for char in label]
    return tokens


def pattern_matches_a_covered_name(pattern: str, wildcard: str) -> bool:
    """Whether ``pattern`` matches at least one name that ``wildcard`` covers; exact, not sampled.

    In ``wildcard`` a ``*`` that is a whole label stands for any non-empty run of characters other
    than a dot, a ``*`` inside a label for any such run (empty included); every other character is
    itself. In ``pattern`` a ``*`` is any run of characters, dots included (``match_pattern``). Both
    describe regular languages; the answer is whether they intersect. The walk is over the product of
    the two: a position ``i`` in the pattern and a position ``j`` in the wildcard's tokens, where
    every step moves ``i`` or ``j`` forward, never back. So one pass over the pattern suffices, with
    ``row`` holding, as bits, every ``j`` reachable having matched ``pattern[:i]``: O(len(pattern))
    operations on integers of len(wildcard) bits. Case is compared as given: callers lower both.
    A wildcard without a ``*`` covers only itself, and then this is ``match_pattern``.
    """
    tokens = _wildcard_tokens(wildcard)
    end = len(tokens)
    runs = [j for j, token in enumerate(tokens) if token == _RUN]
    run_bits = sum(1 << j for j in runs)
    one_bits = sum(1 << j for j, token in enumerate(tokens) if token == _ONE)
    literal_bits: dict[str, int] = {}
    for j, token in enumerate(tokens):
        if isinstance(token, str):
            literal_bits[token] = literal_bits.get(token, 0) | 1 << j
    every_position = (1 << (end + 1)) - 1

    def after_ending_runs(row: int) -> int:
        # A run may stop at once (match nothing more): j -> j + 1 at no cost. Ascending order, so a
        # run that ends lets the next token, if it is a run too, end as well.
        for j in runs:
            if row >> j & 1:
                row |= 1 << (j + 1)
        return row

    row = 1  # nothing read: only wildcard position 0
    for char in pattern:
        if char == "*":
            # The pattern's star may absorb any tokens (a literal, one character, the text of a run):
            # every position from the first one reached on. It may then stop, so the row carries on.
            row |= every_position & ~((row & -row) - 1)
        else:
            row = after_ending_runs(row)
            not_dot = char != "."
            absorbed = row & run_bits if not_dot else 0  # a run takes the character and goes on
            stepped = row & (literal_bits.get(char, 0) | (one_bits if not_dot else 0))
            row = stepped << 1 | absorbed
        if not row:
            return False
    return bool(after_ending_runs(row) >> end & 1)


def _text_admits(kind: str, pattern: str, value: str, *, covered: bool) -> bool:
    """Whether ``pattern`` matches ``value`` (``covered``: some name that the wildcard value covers)."""
    if kind in _NAME_TYPES:
        pattern = pattern.lower()
    if covered:
        return any(pattern_matches_a_covered_name(pattern, form) for form in _forms(kind, value))
    return any(match_pattern(pattern, form) for form in _forms(kind, value))


def _ip_forms(value: str) -> list[IpAddress]:
    """``value`` and, for an IPv6 address that embeds an IPv4 one, that IPv4 address; [] if no address."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return []
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    address = ipaddress.IPv6Address(int(address))  # without any zone index
    embedded = address.ipv4_mapped
    if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
        # IPv4-compatible ::a.b.c.d (RFC 4291 2.5.5.1, deprecated); :: and ::1 are not IPv4 addresses.
        embedded = ipaddress.IPv4Address(int(address))
    return [address] if embedded is None else [address, embedded]


def _network_forms(network: IpNetwork) -> list[IpNetwork]:
    """``network`` and, for one inside ``::ffff:0:0/96``, the IPv4 network it maps."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
        return [network, mapped]
    return [network]


def _ip_admits(pattern: str, value: str) -> bool | None:
    """Whether the address ``value`` matches ``pattern`` in any of its forms; None: unreadable pattern."""
    forms = _ip_forms(value)
    if "*" in pattern and "/" not in pattern:
        texts = {text for address in forms for text in (str(address), address.exploded)}
        return any(match_pattern(pattern, text, ignore_case=True) for text in texts)
    if "%" in pattern:
        return None
    try:
        network = ipaddress.ip_network(pattern, strict=False)  # an address reads as a /32 or /128
    except ValueError:
        return None
    return any(address in net for address in forms for net in _network_forms(network)
               if address.version == net.version)


def _admits(kind: str, pattern: str, value: str) -> bool:
    """Whether an allowed or required ``pattern`` admits ``value`` (as written, even a wildcard)."""
    if kind == "ip_address":
        return _ip_admits(pattern, value) is True  # an unreadable pattern admits nothing
    return _text_admits(kind, pattern, value, covered=False)


def _denial(kind: str, rule: PatternRule, value: str) -> str | None:
    """Why a denied pattern of ``rule`` rejects ``value``, or None if none does."""
    wildcard = _is_wildcard(kind, value)
    for pattern in rule.denied:
        if kind == "ip_address":
            hit = _ip_admits(pattern, value)
            if hit is None:
                # Saving refuses such a pattern; if one is stored anyway, refusing is the safe reading.
                return f"denied pattern {pattern!r} cannot be read as an IP pattern, so every address is refused"
            if hit:
                return f"matches denied pattern {pattern!r}"
        elif _text_admits(kind, pattern, value, covered=wildcard):
            if wildcard:
                return f"is a wildcard covering names that match denied pattern {pattern!r}"
            return f"matches denied pattern {pattern!r}"
    return None


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
        if kind == "ip_address" and not _ip_forms(value):
            errors.append(FieldError(field, f"ip_address {value!r} is not an IP address"))
            continue
        if not rule.allow_wildcards and _is_wildcard(kind, value):
            errors.append(FieldError(field, f"{kind} {value!r} is a wildcard, and the policy allows none for "
                                            f"{kind} (allowWildcards: false)"))
            continue
        denial = _denial(kind, rule, value)
        if denial is not None:
            errors.append(FieldError(field, f"{kind} {value!r} {denial}"))
        elif not any(_admits(kind, p, value) for p in [*rule.allowed, *rule.required]):
            errors.append(FieldError(field, f"{kind} {value!r} matches no allowed pattern "
                                            f"(allowed: {_listing([*rule.allowed, *rule.required])})"))
    for pattern in rule.required if rule else []:
        if not any(_admits(kind, pattern, value) for _, value in values):
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
