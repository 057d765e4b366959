"""A certificate policy said in words, for the profiles page (pure: rules in, sentences out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from shared.policy.attributes import ProfileDefaults
from shared.policy.rules import PatternRule, PolicyRules

NAME_WORDS: Final = {"common_name": "Common name", "organization": "Organization",
                     "organizational_unit": "Organizational unit", "country": "Country", "state": "State",
                     "locality": "Locality", "dns_name": "DNS names", "ip_address": "IP addresses",
                     "email": "E-mail addresses", "uri": "URIs"}


def _listing(values: Sequence[str]) -> str:
    return ", ".join(values)


def _pattern_rule(rule: PatternRule) -> str:
    parts = []
    if rule.allowed:
        parts.append(f"may be {_listing(rule.allowed)}")
    if rule.required:
        parts.append(f"must include {_listing(rule.required)}")
    if rule.denied:
        parts.append(f"never {_listing(rule.denied)}")
    if not rule.allow_wildcards:
        parts.append("no wildcards")
    return f"{NAME_WORDS.get(rule.type, rule.type)}: {'; '.join(parts) or 'none allowed'}"


def policy_sentences(rules: PolicyRules, defaults: ProfileDefaults | None = None) -> list[str]:
    """Which names, key types and lifetimes the policy allows, one sentence each (and, given a profile's
    defaults, what it fills in)."""
    out = [_pattern_rule(rule) for rule in [*rules.subject, *rules.sans]]
    if not rules.sans:
        out.append("Subject alternative names: none allowed")
    keys = rules.algorithms.key_algorithm
    out.append(f"Key types: {_listing(keys)}" if keys else "Key types: any the service supports")
    out.append(f"Maximum lifetime: {rules.validity.max}" if rules.validity else
               "Maximum lifetime: no limit of the policy's own (never past the CA's)")
    if defaults is not None:
        default_ttl = f"{defaults.ttl_days} days" if defaults.ttl_days else (defaults.ttl or "none")
        default_key = defaults.key_algorithm or "the CA's"
        out.append(f"Default lifetime: {default_ttl}; default key type: {default_key}")
    if rules.key_usages is not None:
        out.append(f"Key usages: {_listing([*rules.key_usages.allowed, *rules.key_usages.required]) or 'none'}")
    if rules.extended_key_usages is not None:
        allowed = [*rules.extended_key_usages.allowed, *rules.extended_key_usages.required]
        out.append(f"Extended key usages: {_listing(allowed) or 'none'}")
    out.append(f"CA certificates: {rules.basic_constraints.is_ca}")
    return out
