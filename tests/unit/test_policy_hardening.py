"""The policy engine against the tricks of issue 8: wildcards that cover denied names, case and
trailing dots, unreadable CIDRs, and IPv4 addresses dressed as IPv6 (DESIGN.md 5.4)."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.errors import FieldError
from shared.pki.template import AltName, CertificateTemplate, SubjectName, Validity
from shared.policy.attributes import AltNameInput
from shared.policy.rules import (
    PatternRule,
    PolicyRules,
    check_template,
    match_pattern,
    pattern_matches_a_covered_name,
)

# The policy of the issue: every name under example.com except prod.example.com.
EXAMPLE_POLICY: dict[str, Any] = {
    "subject": [{"type": "common_name", "allowed": ["*.example.com"], "denied": ["prod.example.com"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.com"], "denied": ["prod.example.com"]}],
}


def rules(document: dict[str, Any] | None = None, **sections: Any) -> PolicyRules:
    return PolicyRules.model_validate({**(document or EXAMPLE_POLICY), **sections})


def template(cn: str | None = "api.example.com", *alt_names: AltName) -> CertificateTemplate:
    return CertificateTemplate(
        subject=SubjectName(common_name=cn),
        alt_names=alt_names if alt_names else ((AltName("dns_name", cn),) if cn else ()),
        key_usages=frozenset({"digital_signature"}),
        extended_key_usages=frozenset({"server_auth"}),
        key_algorithm="EC_prime256v1",
        signature_algorithm="ECDSA-SHA256",
        validity=Validity(ttl_seconds=30 * 86400),
    )


def dns(value: str) -> AltName:
    return AltName("dns_name", value)


def ip(value: str) -> AltName:
    return AltName("ip_address", value)


def fields(errors: list[FieldError]) -> list[str]:
    return [e.field for e in errors]


# -- 1. wildcards are requests for every name they cover ------------------------------------------------

def test_wildcard_san_covering_a_denied_name_is_rejected_naming_the_pattern() -> None:
    errors = check_template(rules(), template(None, dns("*.example.com")))

    assert [(e.field, e.message) for e in errors] == [(
        "attributes.altNames[0]",
        "dns_name '*.example.com' is a wildcard covering names that match denied pattern 'prod.example.com'",
    )]


def test_wildcard_common_name_covering_a_denied_name_is_rejected() -> None:
    errors = check_template(rules(), template("*.example.com", dns("api.example.com")))

    assert fields(errors) == ["attributes.commonName"]
    assert "covering names that match denied pattern 'prod.example.com'" in errors[0].message


def test_partial_label_wildcard_common_name_is_a_wildcard_too() -> None:
    errors = check_template(rules(), template("pr*.example.com", dns("api.example.com")))
    assert fields(errors) == ["attributes.commonName"]


@pytest.mark.parametrize("denied", [
    "prod.example.com", "prod*", "*prod*", "p*d.example.com", "*.example.com", "*", "*.com",
    "**",
], ids=lambda d: d)
def test_denied_pattern_matching_some_covered_name_rejects_the_wildcard(denied: str) -> None:
    policy = rules(sans=[{"type": "dns_name", "allowed": ["*.example.com"], "denied": [denied]}])
    assert fields(check_template(policy, template(None, dns("*.example.com")))) == ["attributes.altNames[0]"]


@pytest.mark.parametrize("denied", [
    # A covered name is one label then .example.com: never two labels, never example.com itself,
    # never a name elsewhere.
    "a.b.example.com", "*.internal.example.com", "example.com", "prod.example.org", "*.example.com.*",
    "*..example.com", ".example.com",
], ids=lambda d: d)
def test_denied_pattern_no_covered_name_can_match_leaves_the_wildcard_allowed(denied: str) -> None:
    policy = rules(sans=[{"type": "dns_name", "allowed": ["*.example.com"], "denied": [denied]}])
    assert check_template(policy, template(None, dns("*.example.com"))) == []


def test_wildcard_must_still_match_an_allowed_pattern_as_written() -> None:
    policy = rules(sans=[{"type": "dns_name", "allowed": ["api.example.com", "web.example.com"]}])
    errors = check_template(policy, template(None, dns("*.example.com")))
    assert fields(errors) == ["attributes.altNames[0]"]
    assert "matches no allowed pattern" in errors[0].message


def test_policy_can_forbid_wildcards_outright() -> None:
    policy = rules(sans=[{"type": "dns_name", "allowed": ["*.example.com"], "allowWildcards": False}])

    errors = check_template(policy, template(None, dns("*.example.com"), dns("api.example.com")))

    assert [(e.field, e.message) for e in errors] == [(
        "attributes.altNames[0]",
        "dns_name '*.example.com' is a wildcard, and the policy allows none for dns_name (allowWildcards: false)",
    )]


def test_forbidding_wildcards_in_common_names_rejects_a_wildcard_common_name() -> None:
    policy = rules(subject=[{"type": "common_name", "allowed": ["*"], "allowWildcards": False}])
    errors = check_template(policy, template("*.example.com", dns("api.example.com")))
    assert fields(errors) == ["attributes.commonName"]
    assert "allowWildcards: false" in errors[0].message


def test_allow_wildcards_on_a_type_without_wildcards_is_refused() -> None:
    with pytest.raises(ValidationError, match="allowWildcards applies to dns_name and common_name rules only"):
        PolicyRules.model_validate({"sans": [{"type": "ip_address", "allowed": ["*"], "allowWildcards": False}]})


def test_allow_wildcards_reads_back_only_when_given() -> None:
    # Policies written before the field (and upstream clients) read back exactly as they were sent.
    unset = {"type": "dns_name", "allowed": ["*.example.com"], "required": [], "denied": []}
    given_false = {**unset, "allowWildcards": False}
    document = PolicyRules.model_validate({"sans": [unset], "subject": [given_false | {"type": "common_name"}]})
    dumped = document.model_dump(mode="json", by_alias=True)
    assert dumped["sans"] == [unset]
    assert dumped["subject"] == [given_false | {"type": "common_name"}]
    assert document.sans[0].allow_wildcards is True


# -- the intersection test itself, against a brute force ----------------------------------------------

def _brute_force(pattern: str, suffix: str, alphabet: str, longest: int) -> bool:
    regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
    return any(regex.fullmatch("".join(label) + suffix)
               for length in range(1, longest + 1) for label in itertools.product(alphabet, repeat=length))


@settings(max_examples=300, deadline=None)
@given(st.text("ab.*", max_size=6), st.text("ab.", max_size=4))
def test_covered_name_test_agrees_with_trying_every_short_label(pattern: str, suffix: str) -> None:
    # Labels from the pattern's own letters and one letter it lacks suffice, and a shortest witness
    # is never longer than the pattern plus one: so this brute force is complete for these inputs.
    wildcard = "*" + ("." + suffix if suffix else "")
    expected = _brute_force(pattern, wildcard[1:], "abz", len(pattern) + 1)
    assert pattern_matches_a_covered_name(pattern, wildcard) == expected


@given(st.text("ab.*", max_size=10), st.text("ab.", max_size=10))
def test_covered_name_test_of_a_plain_name_is_the_plain_match(pattern: str, value: str) -> None:
    assert pattern_matches_a_covered_name(pattern, value) == match_pattern(pattern, value)


def test_covered_name_test_handles_partial_label_wildcards() -> None:
    assert pattern_matches_a_covered_name("foo.example.com", "f*.example.com")
    assert pattern_matches_a_covered_name("f.example.com", "f*.example.com")  # the star may be empty
    assert not pattern_matches_a_covered_name("f.x.example.com", "f*.example.com")  # never a dot
    assert not pattern_matches_a_covered_name(".example.com", "*.example.com")  # a label is never empty


def test_covered_name_test_is_linear_in_the_pattern() -> None:
    import time

    started = time.perf_counter()
    assert not pattern_matches_a_covered_name("*a" * 500 + "*b", "*." + "a" * 200)
    assert time.perf_counter() - started < 1


# -- the properties the rule promises ----------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
patterns = st.one_of(
    st.sampled_from(["*.example.com", "prod.example.com", "prod*", "*prod*", "*", "a*.example.com",
                     "*.internal.example.com", "*-*", "*.*.example.com"]),
    st.text("abprod-.*", min_size=1, max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(patterns, max_size=3), st.lists(patterns, max_size=3), st.data())
def test_an_accepted_wildcard_means_every_name_it_covers_is_accepted(
    allowed: list[str], denied: list[str], data: st.DataObject
) -> None:
    # Besides random labels, the labels a denied pattern names (its first label, stars filled in):
    # the ones a wrong answer would let through.
    named = [label for label in (d.split(".")[0].replace("*", "x") for d in denied) if label]
    label = data.draw(st.one_of(labels, st.sampled_from(named)) if named else labels, label="label")
    policy = rules(sans=[{"type": "dns_name", "allowed": allowed, "denied": denied}])
    if check_template(policy, template(None, dns("*.example.com"))) == []:
        assert check_template(policy, template(None, dns(f"{label}.example.com"))) == []


def _recased(value: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(value, itertools.cycle(flips or [False])))


names = st.lists(labels, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "example", "com"]))


@settings(max_examples=200, deadline=None)
@given(names, st.lists(st.booleans(), min_size=1, max_size=8), st.lists(patterns, max_size=2),
       st.lists(patterns, max_size=2))
def test_case_never_changes_the_verdict_on_names(
    name: str, flips: list[bool], allowed: list[str], denied: list[str]
) -> None:
    policy = rules(subject=[{"type": "common_name", "allowed": allowed, "denied": denied}],
                   sans=[{"type": "dns_name", "allowed": allowed, "denied": denied},
                         {"type": "email", "allowed": [f"ops@{p}" for p in allowed],
                          "denied": [f"*@{p}" for p in denied]}])

    def verdict(value: str) -> list[str]:
        return fields(check_template(policy, template(value, dns(value), AltName("email", f"ops@{value}"))))

    assert verdict(_recased(name, flips)) == verdict(name)
    assert verdict(name.upper()) == verdict(name)


# -- 2. case and form tricks -------------------------------------------------------------------------

def test_upper_case_common_name_is_caught_by_a_lower_case_denial() -> None:
    policy = rules(subject=[{"type": "common_name", "allowed": ["*.example.com"], "denied": ["prod.*"]}])
    errors = check_template(policy, template("PROD.example.com", dns("api.example.com")))
    assert fields(errors) == ["attributes.commonName"]
    assert "matches denied pattern 'prod.*'" in errors[0].message


def test_upper_case_pattern_matches_a_lower_case_common_name() -> None:
    policy = rules(subject=[{"type": "common_name", "allowed": ["API.Example.COM"]}])
    assert check_template(policy, template("api.example.com", dns("api.example.com"))) == []


def test_common_name_with_a_trailing_dot_is_the_same_name_to_a_denial() -> None:
    errors = check_template(rules(), template("prod.example.com.", dns("api.example.com")))
    assert fields(errors) == ["attributes.commonName"]
    assert "matches denied pattern 'prod.example.com'" in errors[0].message


def test_common_name_with_a_trailing_dot_is_the_same_name_to_an_allowance() -> None:
    assert check_template(rules(), template("api.example.com.", dns("api.example.com"))) == []


def test_email_domain_case_does_not_dodge_a_denial() -> None:
    policy = rules(sans=[{"type": "email", "allowed": ["*"], "denied": ["*@corp.example.com"]}])
    errors = check_template(policy, template(None, AltName("email", "Ops@CORP.Example.com")))
    assert fields(errors) == ["attributes.altNames[0]"]


def test_other_subject_attributes_stay_case_sensitive() -> None:
    policy = rules(subject=[{"type": "common_name", "allowed": ["*"]},
                            {"type": "organization", "allowed": ["Acme"]}])
    tpl = replace(template(), subject=SubjectName(common_name="api.example.com", organization="ACME"))
    assert fields(check_template(policy, tpl)) == ["attributes.organization"]


# -- 2. IP rules --------------------------------------------------------------------------------------

IP_POLICY: dict[str, Any] = {"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["10.0.0.0/8"]}]}


@pytest.mark.parametrize("value", [
    "10.0.0.1",
    "::ffff:a00:1",  # ::ffff:10.0.0.1 as attributes store it
    "::a00:1",  # ::10.0.0.1, IPv4-compatible
], ids=["ipv4", "ipv4-mapped", "ipv4-compatible"])
def test_ipv4_denial_catches_every_form_of_the_address(value: str) -> None:
    errors = check_template(rules(IP_POLICY), template(None, ip(value)))
    assert fields(errors) == ["attributes.altNames[0]"]
    assert "matches denied pattern '10.0.0.0/8'" in errors[0].message


def test_ipv4_mapped_address_as_attributes_read_it_is_denied() -> None:
    value = AltNameInput(type="ip_address", value="::ffff:10.0.0.1").value
    assert fields(check_template(rules(IP_POLICY), template(None, ip(value)))) == ["attributes.altNames[0]"]


def test_mapped_ipv6_network_in_a_policy_denies_the_plain_ipv4_address() -> None:
    policy = rules({"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["::ffff:10.0.0.0/104"]}]})
    assert fields(check_template(policy, template(None, ip("10.1.2.3")))) == ["attributes.altNames[0]"]


def test_exact_address_pattern_matches_any_spelling_of_the_address() -> None:
    policy = rules({"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["2001:DB8::0:1"]}]})
    assert fields(check_template(policy, template(None, ip("2001:db8::1")))) == ["attributes.altNames[0]"]


def test_ipv4_allowance_admits_the_mapped_form_and_nothing_else() -> None:
    policy = rules({"sans": [{"type": "ip_address", "allowed": ["10.0.0.0/8"]}]})
    assert check_template(policy, template(None, ip("::ffff:a00:1"))) == []
    assert fields(check_template(policy, template(None, ip("::ffff:c0a8:1")))) == ["attributes.altNames[0]"]


def test_loopback_and_unspecified_ipv6_are_not_read_as_ipv4() -> None:
    policy = rules({"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["0.0.0.0/8"]}]})
    assert check_template(policy, template(None, ip("::1"), ip("::"))) == []


@pytest.mark.parametrize("pattern", [
    "10.0.0.0/33", "10.0.0/8", "10.0.0.300", "banana", "10.0.0.0-10.255.255.255", "fe80::1%eth0",
    "10.*/8", "10.0.0.x*",
])
@pytest.mark.parametrize("where", ["allowed", "denied", "required"])
def test_unreadable_ip_pattern_is_refused_when_the_policy_is_saved(pattern: str, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PolicyRules.model_validate({"sans": [{"type": "ip_address", where: [pattern]}]})
    [error] = caught.value.errors()
    assert error["loc"] == ("sans", 0, where)
    assert repr(pattern) in error["msg"]


@pytest.mark.parametrize("pattern", ["10.0.0.0/8", "10.0.0.1/8", "10.0.0.1", "::ffff:0:0/96", "2001:db8::/32",
                                     "10.*", "*", "fe80:*"])
def test_readable_ip_patterns_are_accepted(pattern: str) -> None:
    PolicyRules.model_validate({"sans": [{"type": "ip_address", "allowed": [pattern], "denied": [pattern]}]})


def test_unreadable_denied_cidr_that_reached_the_matcher_refuses_every_address() -> None:
    # Saving refuses it; a rule built without validation (a stored row from before) must fail closed.
    rule = PatternRule.model_construct(type="ip_address", allowed=["*"], required=[], denied=["10.0.0.0/33"],
                                       allow_wildcards=True)
    policy = rules({"sans": []}).model_copy(update={"sans": [rule]})
    errors = check_template(policy, template(None, ip("192.168.1.1")))
    assert fields(errors) == ["attributes.altNames[0]"]
    assert "cannot be read as an IP pattern" in errors[0].message


def test_unreadable_allowed_cidr_that_reached_the_matcher_admits_nothing() -> None:
    rule = PatternRule.model_construct(type="ip_address", allowed=["10.0.0.0/33"], required=[], denied=[],
                                       allow_wildcards=True)
    policy = rules({"sans": []}).model_copy(update={"sans": [rule]})
    assert fields(check_template(policy, template(None, ip("10.0.0.1")))) == ["attributes.altNames[0]"]


def test_ipv6_alt_name_with_a_zone_index_is_refused() -> None:
    with pytest.raises(ValidationError, match="zone index"):
        AltNameInput(type="ip_address", value="fe80::1%eth0")


def test_policy_stored_before_cidr_validation_still_loads_and_fails_closed() -> None:
    from shared.policy.rules import STORED, PolicyRules

    rules = PolicyRules.model_validate(
        {"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["10.0.0.0/33"]}]}, context=STORED)
    assert rules.sans[0].denied == ["10.0.0.0/33"]
    with pytest.raises(ValueError):
        PolicyRules.model_validate({"sans": [{"type": "ip_address", "allowed": ["*"], "denied": ["10.0.0.0/33"]}]})
