"""The certificate policy: its JSON model and the engine that checks a template against it."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.pki.template import AltName, CertificateTemplate, SubjectName, Validity
from shared.policy.rules import PolicyRules, check_template, match_pattern, signature_algorithm_allowed

BASE_RULES: dict[str, Any] = {
    "subject": [{"type": "common_name", "allowed": ["*.example.com"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.com"]}],
}


def template(**changes: Any) -> CertificateTemplate:
    """A leaf for api.example.com that BASE_RULES allow; ``changes`` replace single fields."""
    base = CertificateTemplate(
        subject=SubjectName(common_name="api.example.com"),
        alt_names=(AltName("dns_name", "api.example.com"),),
        key_usages=frozenset({"digital_signature"}),
        extended_key_usages=frozenset({"server_auth"}),
        key_algorithm="EC_prime256v1",
        signature_algorithm="ECDSA-SHA256",
        validity=Validity(ttl_seconds=30 * 86400),
    )
    return replace(base, **changes)


def rules(**sections: Any) -> PolicyRules:
    return PolicyRules.model_validate({**BASE_RULES, **sections})


def dns(*values: str) -> tuple[AltName, ...]:
    return tuple(AltName("dns_name", v) for v in values)


NOW = datetime(2025, 1, 1, tzinfo=UTC)
ANY_CN = {"type": "common_name", "allowed": ["*"]}

# (policy sections over BASE_RULES, template changes, expected [(field, message fragment)])
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
    ("everything-allowed", {}, {}, []),
    ("subject-attribute-without-rule-is-denied", {},
     {"subject": SubjectName(common_name="api.example.com", organization="Acme")},
     [("attributes.organization", "no rule for organization")]),
    ("subject-value-outside-allowed", {}, {"subject": SubjectName(common_name="api.other.org")},
     [("attributes.commonName",
       "common_name 'api.other.org' matches no allowed pattern (allowed: *.example.com)")]),
    ("subject-value-denied", {"subject": [{"type": "common_name", "allowed": ["*"], "denied": ["admin.*"]}]},
     {"subject": SubjectName(common_name="admin.example.com")},
     [("attributes.commonName", "matches denied pattern 'admin.*'")]),
    ("subject-required-missing", {"subject": [ANY_CN, {"type": "organization", "required": ["Acme*"]}]},
     {}, [("attributes.organization", "organization matching required pattern 'Acme*' is missing")]),
    ("subject-required-met", {"subject": [ANY_CN, {"type": "organization", "required": ["Acme*"]}]},
     {"subject": SubjectName(common_name="x", organization="Acme Corp")}, []),
    ("subject-exact-match-is-case-sensitive", {"subject": [{"type": "organization", "allowed": ["Acme"]}]},
     {"subject": SubjectName(organization="ACME")},
     [("attributes.organization", "matches no allowed pattern (allowed: Acme)")]),
    ("san-type-without-rule-is-denied", {},
     {"alt_names": (*dns("api.example.com"), AltName("ip_address", "10.0.0.1"))},
     [("attributes.altNames[1]",
       "ip_address '10.0.0.1' is not allowed: the policy has no rule for ip_address")]),
    ("san-outside-allowed", {}, {"alt_names": dns("api.example.com", "x.evil.org")},
     [("attributes.altNames[1]",
       "dns_name 'x.evil.org' matches no allowed pattern (allowed: *.example.com)")]),
    ("san-denied", {"sans": [{"type": "dns_name", "allowed": ["*.example.com"], "denied": ["*.internal.*"]}]},
     {"alt_names": dns("db.internal.example.com")},
     [("attributes.altNames[0]", "matches denied pattern '*.internal.*'")]),
    ("san-required-missing",
     {"sans": [{"type": "dns_name", "allowed": ["*"], "required": ["api.example.com"]}]},
     {"alt_names": dns("www.example.com")},
     [("attributes.altNames", "dns_name matching required pattern 'api.example.com' is missing")]),
    ("san-required-also-allows", {"sans": [{"type": "dns_name", "required": ["api.example.com"]}]}, {}, []),
    ("dns-match-ignores-case", {}, {"alt_names": dns("API.Example.COM")}, []),
    ("ip-cidr-pattern", {"sans": [*BASE_RULES["sans"], {"type": "ip_address", "allowed": ["10.0.0.0/8"]}]},
     {"alt_names": (AltName("ip_address", "10.1.2.3"), AltName("ip_address", "192.168.0.1"))},
     [("attributes.altNames[1]",
       "ip_address '192.168.0.1' matches no allowed pattern (allowed: 10.0.0.0/8)")]),
    ("key-usages-unconstrained-without-rule", {}, {"key_usages": frozenset({"key_agreement"})}, []),
    ("key-usage-not-allowed", {"keyUsages": {"allowed": ["digital_signature"]}},
     {"key_usages": frozenset({"digital_signature", "key_encipherment"})},
     [("attributes.keyUsages", "key usage 'key_encipherment' is not allowed (allowed: digital_signature)")]),
    ("key-usage-denied", {"keyUsages": {"allowed": ["digital_signature"], "denied": ["non_repudiation"]}},
     {"key_usages": frozenset({"digital_signature", "non_repudiation"})},
     [("attributes.keyUsages", "key usage 'non_repudiation' is denied")]),
    ("key-usage-required-missing", {"keyUsages": {"required": ["digital_signature", "key_encipherment"]}}, {},
     [("attributes.keyUsages", "required key usage 'key_encipherment' is missing")]),
    ("eku-not-allowed", {"extendedKeyUsages": {"allowed": ["client_auth"]}}, {},
     [("attributes.extendedKeyUsages",
       "extended key usage 'server_auth' is not allowed (allowed: client_auth)")]),
    ("eku-required-missing",
     {"extendedKeyUsages": {"allowed": ["server_auth"], "required": ["client_auth"]}}, {},
     [("attributes.extendedKeyUsages", "required extended key usage 'client_auth' is missing")]),
    ("key-algorithm-not-allowed", {"algorithms": {"keyAlgorithm": ["RSA_2048", "RSA_4096"]}}, {},
     [("attributes.keyAlgorithm",
       "key algorithm 'EC_prime256v1' is not allowed (allowed: RSA_2048, RSA_4096)")]),
    ("signature-not-allowed", {"algorithms": {"signature": ["ECDSA-SHA384"]}}, {},
     [("attributes.signatureAlgorithm", "signature algorithm 'ECDSA-SHA256' is not allowed")]),
    ("issuer-default-signature-left-to-worker", {"algorithms": {"signature": ["ECDSA-SHA384"]}},
     {"signature_algorithm": None}, []),
    ("empty-algorithm-lists-allow-any", {"algorithms": {"signature": [], "keyAlgorithm": []}}, {}, []),
    ("ttl-over-max", {"validity": {"max": "90d"}}, {"validity": Validity(ttl_seconds=365 * 86400)},
     [("attributes.ttl", "ttl 1y exceeds the policy's maximum validity of 90d")]),
    ("ttl-at-max", {"validity": {"max": "90d"}}, {"validity": Validity(ttl_seconds=90 * 86400)}, []),
    # In validity.max, m is months of 30 days (upstream's meaning), never minutes.
    ("ttl-within-max-in-months", {"validity": {"max": "6m"}}, {"validity": Validity(ttl_seconds=180 * 86400)}, []),
    ("ttl-over-max-in-months", {"validity": {"max": "6m"}}, {"validity": Validity(ttl_seconds=181 * 86400)},
     [("attributes.ttl", "ttl 181d exceeds the policy's maximum validity of 6m")]),
    ("window-over-max", {"validity": {"max": "90d"}},
     {"validity": Validity(not_before=NOW, not_after=NOW + timedelta(days=91))},
     [("attributes.notAfter", "validity window (notBefore to notAfter) of 91d exceeds")]),
    ("ca-denied-by-default", {}, {"is_ca": True},
     [("attributes.basicConstraints.isCA", "CA certificates are denied by the policy")]),
    ("ca-required", {"basicConstraints": {"isCA": "required"}}, {},
     [("attributes.basicConstraints.isCA", "the policy requires a CA certificate")]),
    ("ca-allowed-within-path-length", {"basicConstraints": {"isCA": "allowed", "maxPathLength": 1}},
     {"is_ca": True, "path_length": 0}, []),
    ("path-length-over-max", {"basicConstraints": {"isCA": "allowed", "maxPathLength": 0}},
     {"is_ca": True, "path_length": 2},
     [("attributes.basicConstraints.pathLength", "path length 2 exceeds the policy's maxPathLength of 0")]),
    ("unlimited-path-length-over-max", {"basicConstraints": {"isCA": "allowed", "maxPathLength": 0}},
     {"is_ca": True}, [("attributes.basicConstraints.pathLength", "unlimited path length exceeds")]),
    ("combined-san-usage-and-ttl",
     {"keyUsages": {"allowed": ["digital_signature"]}, "validity": {"max": "30d"}},
     {"alt_names": dns("api.example.com", "x.evil.org"), "key_usages": frozenset({"key_encipherment"}),
      "validity": Validity(ttl_seconds=31 * 86400)},
     [("attributes.altNames[1]", "x.evil.org"), ("attributes.keyUsages", "key_encipherment"),
      ("attributes.ttl", "31d")]),
]


@pytest.mark.parametrize(
    ("section", "changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_policy_engine_reports_exactly_the_broken_rules(
    section: dict[str, Any], changes: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    errors = check_template(rules(**section), template(**changes))
    assert [e.field for e in errors] == [field for field, _ in expected], errors
    for error, (_, fragment) in zip(errors, expected, strict=True):
        assert fragment in error.message


def test_request_breaking_three_rules_gets_all_three_violations() -> None:
    policy = rules(extendedKeyUsages={"allowed": ["client_auth"]}, algorithms={"keyAlgorithm": ["RSA_2048"]},
                   validity={"max": "7d"})
    errors = check_template(policy, template())
    assert {e.field for e in errors} == {
        "attributes.extendedKeyUsages", "attributes.keyAlgorithm", "attributes.ttl"}


def test_worker_can_check_the_resolved_issuer_signature() -> None:
    policy = rules(algorithms={"signature": ["RSA-SHA256"]})
    assert signature_algorithm_allowed(policy, "RSA-SHA256")
    assert not signature_algorithm_allowed(policy, "ECDSA-SHA256")
    assert signature_algorithm_allowed(rules(), "ED25519")


def test_policy_json_round_trips_in_camel_case() -> None:
    document = {
        "subject": [{"type": "common_name", "allowed": ["*.example.com"], "required": [], "denied": []}],
        "sans": [],
        "keyUsages": {"allowed": ["digital_signature"], "required": [], "denied": []},
        "extendedKeyUsages": None,
        "algorithms": {"signature": ["ECDSA-SHA256"], "keyAlgorithm": ["EC_prime256v1"]},
        "validity": {"max": "90d"},
        "basicConstraints": {"isCA": "allowed", "maxPathLength": 0},
    }
    assert PolicyRules.model_validate(document).model_dump(by_alias=True) == document


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"keyUsages": {"allowed": ["server_auth"]}}, "digital_signature"),
        ({"extendedKeyUsages": {"allowed": ["digital_signature"]}}, "server_auth"),
        ({"sans": [{"type": "common_name", "allowed": ["x"]}]}, "not a SAN type"),
        ({"subject": [{"type": "dns_name", "allowed": ["x"]}]}, "not a subject type"),
        ({"sans": [{"type": "dns_name"}, {"type": "dns_name"}]}, "more than one SAN rule"),
        ({"keyUsages": {"allowed": ["crl_sign"], "denied": ["crl_sign"]}}, "both denied and allowed"),
        ({"algorithms": {"keyAlgorithm": ["DSA_1024"]}}, "unknown key algorithm 'DSA_1024'"),
        ({"algorithms": {"signature": ["MD5"]}}, "unknown signature algorithm 'MD5'"),
        ({"validity": {"max": "90"}}, "no unit"),
        ({"basicConstraints": {"isCA": "maybe"}}, "'allowed', 'required' or 'denied'"),
        ({"sans": [{"type": "dns_name", "allowed": [""]}]}, "1 to 1024 characters"),
    ],
    ids=["eku-name-as-key-usage", "key-usage-name-as-eku", "subject-type-in-sans",
         "san-type-in-subject", "duplicate-rule", "denied-and-allowed", "unknown-key-algorithm",
         "unknown-signature", "bad-validity", "bad-is-ca", "empty-pattern"],
)
def test_malformed_policy_is_rejected_naming_the_problem(document: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        PolicyRules.model_validate(document)


def test_unknown_policy_field_is_ignored_so_the_policy_is_as_if_it_were_absent() -> None:
    """Unknown fields are ignored (DESIGN.md 5.1), so a misspelled section (``subjects``) is no rule at
    all: the policy is the default one, under which a subject attribute without a rule is refused."""
    typo = PolicyRules.model_validate({"subjects": [{"type": "common_name", "allowed": ["*"]}]})

    assert typo == PolicyRules.model_validate({})
    assert [e.field for e in check_template(typo, template())] == ["attributes.commonName",
                                                                    "attributes.altNames[0]"]


def test_misspelled_is_ca_in_a_policy_is_ignored_so_ca_certificates_stay_denied() -> None:
    """A typo in a policy must not silently widen it: ``isCa`` (for ``isCA``) is an unknown field, ignored
    (DESIGN.md 5.1), so ``isCA`` is absent, which means denied (5.4), and a CA request is refused."""
    typo = rules(basicConstraints={"isCa": "allowed", "maxPathLength": 1})

    assert typo.basic_constraints == rules(basicConstraints={"maxPathLength": 1}).basic_constraints
    errors = check_template(typo, template(is_ca=True, path_length=0))
    assert [(e.field, e.message) for e in errors] == [
        ("attributes.basicConstraints.isCA", "CA certificates are denied by the policy (isCA: denied)")]


# --- the wildcard matcher ---------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(hostnames)
def test_wildcard_matches_any_name_under_the_domain(name: str) -> None:
    assert match_pattern("*.example.com", f"{name}.example.com")


@given(labels, st.text())
def test_wildcard_never_matches_the_domain_as_a_prefix(label: str, anything: str) -> None:
    assert not match_pattern("*.example.com", f"example.com.{label}")
    assert not match_pattern("*.example.com", f"{anything}.example.com.evil.org")


@given(st.text(st.characters(blacklist_characters="*")), st.text())
def test_pattern_without_star_matches_only_itself(pattern: str, value: str) -> None:
    assert match_pattern(pattern, pattern)
    assert match_pattern(pattern, value) == (pattern == value)


@given(st.text("ab*.", max_size=12), st.text("ab.", max_size=12))
def test_matcher_agrees_with_an_anchored_regex(pattern: str, value: str) -> None:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    assert match_pattern(pattern, value) == (re.fullmatch(regex, value, re.DOTALL) is not None)


@given(st.text())
def test_lone_star_matches_everything_including_empty(value: str) -> None:
    assert match_pattern("*", value)


def test_match_is_case_insensitive_only_when_asked() -> None:
    assert match_pattern("*.Example.com", "API.example.COM", ignore_case=True)
    assert not match_pattern("*.Example.com", "api.example.com")


def test_star_heavy_pattern_does_not_backtrack_exponentially() -> None:
    started = time.perf_counter()
    assert not match_pattern("*a" * 30 + "*b", "a" * 2000)
    assert time.perf_counter() - started < 2
