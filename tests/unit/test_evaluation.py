"""Request evaluation: CSR + attributes + profile defaults + policy -> one template, or every reason not."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pydantic import ValidationError

from shared.errors import BadRequest, PolicyViolation
from shared.pki.keys import KEY_ALGORITHMS, SIGNATURE_ALGORITHMS
from shared.pki.template import AltName, CertificateTemplate, Validity
from shared.policy.attributes import (
    ApiConfig,
    IssueAttributes,
    KeyAlgorithmName,
    ProfileDefaults,
    SignatureAlgorithmName,
)
from shared.policy.evaluation import evaluate_request
from shared.policy.rules import PolicyRules
from tests.issuance import csrs
from tests.issuance.csrs import pem_of

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

POLICY = PolicyRules.model_validate({
    "subject": [{"type": "common_name", "allowed": ["*.example.com"]},
                {"type": "organization", "allowed": ["Acme*"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.com"]},
             {"type": "ip_address", "allowed": ["10.0.0.0/8"]}],
    "validity": {"max": "90d"},
    "basicConstraints": {"isCA": "allowed", "maxPathLength": 1},
})

_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

Key = Any


def make_csr(
    key: Key = _EC_KEY,
    *,
    cn: str | None = "api.example.com",
    sans: tuple[x509.GeneralName, ...] = (x509.DNSName("api.example.com"),),
    extensions: tuple[x509.ExtensionType, ...] = (),
    extra_subject: tuple[x509.NameAttribute[str], ...] = (),
) -> str:
    """tests.issuance.csrs.make_csr with this module's defaults: one fixed key, CN and SAN api.example.com."""
    return csrs.make_csr(key, cn=cn, sans=sans, extensions=extensions, extra_subject=extra_subject)


def evaluate(
    *,
    attributes: dict[str, Any] | None = None,
    csr: str | None = None,
    defaults: dict[str, Any] | None = None,
    rules: PolicyRules = POLICY,
) -> CertificateTemplate:
    return evaluate_request(
        rules=rules,
        defaults=ProfileDefaults.model_validate(defaults or {"ttl": "30d"}),
        attributes=None if attributes is None else IssueAttributes.model_validate(attributes),
        csr_pem=csr,
        now=NOW,
    )


def spki(key: Key) -> bytes:
    return bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))


# --- CSRs the service accepts -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "algorithm", "usages"),
    [
        (_RSA_KEY, "RSA_2048", {"digital_signature", "key_encipherment"}),
        (_EC_KEY, "EC_prime256v1", {"digital_signature"}),
        (ed25519.Ed25519PrivateKey.generate(), "ED25519", {"digital_signature"}),
    ],
    ids=["rsa-2048", "ec-p256", "ed25519"],
)
def test_valid_csr_yields_a_template_with_its_key_and_names(
    key: Key, algorithm: str, usages: set[str]
) -> None:
    result = evaluate(csr=make_csr(key))
    assert result.key_algorithm == algorithm
    assert result.public_key_der == spki(key)
    assert result.subject.common_name == "api.example.com"
    assert result.alt_names == (AltName("dns_name", "api.example.com"),)
    assert result.key_usages == usages
    assert result.extended_key_usages == {"server_auth"}
    assert result.validity == Validity(ttl_seconds=30 * 86400)


def test_csr_requested_extensions_are_taken_from_the_csr() -> None:
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    csr = make_csr(extensions=(usage, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])))
    result = evaluate(csr=csr)
    assert result.key_usages == {"digital_signature", "key_agreement"}
    assert result.extended_key_usages == {"client_auth"}


def test_attributes_add_ttl_and_usages_to_a_csr() -> None:
    csr = make_csr(extensions=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),))
    result = evaluate(csr=csr, attributes={"ttl": "7d", "extendedKeyUsages": ["server_auth"],
                                           "commonName": "api.example.com"})
    assert result.validity.ttl_seconds == 7 * 86400
    assert result.extended_key_usages == {"server_auth"}


def test_csr_ip_and_upper_case_dns_names_are_normalized() -> None:
    csr = make_csr(sans=(x509.DNSName("API.Example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))))
    assert evaluate(csr=csr).alt_names == (AltName("dns_name", "api.example.com"),
                                           AltName("ip_address", "10.0.0.1"))


# --- CSRs the service refuses -----------------------------------------------------------------------

def _flip_signature_byte(pem: str) -> str:
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature BIT STRING is the last field of the CSR
    return pem_of(bytes(der))


def _garbage_san_csr() -> str:
    garbage = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02garbage")
    return make_csr(sans=(), extensions=(garbage,))


def _pem_with_bad_base64() -> str:
    body = make_csr().splitlines()[1:-1]
    body[0] = "!!!!" + body[0][4:]
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(body) + "\n-----END CERTIFICATE REQUEST-----\n"


BAD_CSRS: list[tuple[str, Any, str]] = [
    ("rsa-1024", lambda: make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505
     "RSA key of 1024 bits is too weak"),
    ("dsa", lambda: make_csr(dsa.generate_private_key(key_size=2048)), "DSAPublicKey is not accepted"),
    ("p-192", lambda: make_csr(ec.generate_private_key(ec.SECP192R1())),
     "EC curve secp192r1 is not accepted"),
    ("bad-signature", lambda: _flip_signature_byte(make_csr()), "CSR signature does not verify"),
    ("not-pem", lambda: "hello, I am a CSR", "exactly one '-----BEGIN CERTIFICATE REQUEST-----' block"),
    ("certificate-pem", lambda: make_csr().replace("CERTIFICATE REQUEST", "CERTIFICATE"),
     "exactly one '-----BEGIN CERTIFICATE REQUEST-----' block"),
    ("two-blocks", lambda: make_csr() + make_csr(), "exactly one"),
    ("bad-base64", _pem_with_bad_base64, "not valid base64"),
    ("not-pkcs10", lambda: pem_of(b"\x30\x03\x02\x01\x00"), "not a valid PKCS#10 certification request"),
    ("one-mebibyte", lambda: pem_of(b"\x00" * (1024 * 1024)), "at most 16384 bytes (16 KiB)"),
    ("500-sans", lambda: make_csr(sans=tuple(x509.DNSName(f"h{i}.example.com") for i in range(500))),
     "CSR requests 500 subject alternative names; at most 100"),
    ("malformed-san", _garbage_san_csr, "subjectAltName extension is malformed"),
    ("unsupported-subject-attribute",
     lambda: make_csr(extra_subject=(x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@example.com"),)),
     "subject attribute"),
    ("directory-name-san",
     lambda: make_csr(sans=(x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),)),
     "not supported; use DNS, IP, email or URI"),
    ("over-long-common-name", lambda: make_csr(cn="a" * 65), "csr.commonName: String should have at most 64"),
    ("bad-dns-san", lambda: make_csr(sans=(x509.DNSName("bad_name!.example.com"),)),
     "'bad_name!.example.com' is not a valid DNS name"),
]


# cryptography warns (rightly) when it meets the over-long name a hostile CSR carries.
OVERLONG_NAME_WARNING = "ignore:Attribute's length:UserWarning"


@pytest.mark.filterwarnings(OVERLONG_NAME_WARNING)
@pytest.mark.parametrize(("make", "message"), [c[1:] for c in BAD_CSRS], ids=[c[0] for c in BAD_CSRS])
def test_unacceptable_csr_is_a_bad_request_naming_the_problem(make: Any, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        evaluate(csr=make())
    assert message in caught.value.detail
    assert caught.value.status == 400


def test_the_second_evaluation_checks_everything_but_the_signature_the_first_verified() -> None:
    """The worker's evaluation of a stored request (csr_signature_verified) still enforces the policy on
    the CSR's names; only the proof of possession, verified by the API before storing, is not redone."""
    tampered = _flip_signature_byte(make_csr(sans=(x509.DNSName("x.evil.org"),)))
    with pytest.raises(BadRequest, match="CSR signature does not verify"):
        evaluate(csr=tampered)
    with pytest.raises(PolicyViolation) as caught:
        evaluate_request(rules=POLICY, defaults=ProfileDefaults.model_validate({"ttl": "30d"}), attributes=None,
                         csr_pem=tampered, now=NOW, csr_signature_verified=True)
    assert "x.evil.org" in str(caught.value)
    good = make_csr()
    assert evaluate_request(rules=POLICY, defaults=ProfileDefaults.model_validate({"ttl": "30d"}), attributes=None,
                            csr_pem=good, now=NOW, csr_signature_verified=True) == evaluate(csr=good)


@pytest.mark.filterwarnings(OVERLONG_NAME_WARNING)
def test_bad_csr_name_is_reported_with_its_field() -> None:
    with pytest.raises(BadRequest) as caught:
        evaluate(csr=make_csr(cn="a" * 65))
    assert [e.field for e in caught.value.errors] == ["csr.commonName"]


def test_csr_with_san_outside_policy_is_rejected_with_every_violation() -> None:
    csr = make_csr(sans=(x509.DNSName("api.example.com"), x509.DNSName("x.evil.org"),
                         x509.IPAddress(ipaddress.ip_address("192.168.1.1")),
                         x509.UniformResourceIdentifier("spiffe://example.com/api")))
    with pytest.raises(PolicyViolation) as caught:
        evaluate(csr=csr, attributes={"ttl": "1y"})
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("attributes.altNames[1]",
         "dns_name 'x.evil.org' matches no allowed pattern (allowed: *.example.com)"),
        ("attributes.altNames[2]",
         "ip_address '192.168.1.1' matches no allowed pattern (allowed: 10.0.0.0/8)"),
        ("attributes.altNames[3]",
         "uri 'spiffe://example.com/api' is not allowed: the policy has no rule for uri"),
        ("attributes.ttl", "ttl 1y exceeds the policy's maximum validity of 90d"),
    ]
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"commonName": "other.example.com"}, "attributes.commonName"),
        ({"altNames": [{"type": "dns_name", "value": "www.example.com"}]}, "attributes.altNames"),
        ({"keyAlgorithm": "RSA_2048"}, "attributes.keyAlgorithm"),
    ],
    ids=["common-name", "alt-names", "key-algorithm"],
)
def test_attributes_contradicting_the_csr_are_a_bad_request(attributes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest, match="contradict") as caught:
        evaluate(csr=make_csr(), attributes=attributes)
    assert [e.field for e in caught.value.errors] == [field]


def test_attributes_repeating_the_csr_names_are_accepted() -> None:
    attributes = {"commonName": "api.example.com",
                  "altNames": [{"type": "dns_name", "value": "API.example.com"}]}
    assert evaluate(csr=make_csr(), attributes=attributes).subject.common_name == "api.example.com"


# --- requests without a CSR -------------------------------------------------------------------------

def test_request_without_csr_lets_the_worker_generate_the_default_key() -> None:
    result = evaluate(attributes={"commonName": "api.example.com"})
    assert result.public_key_der is None
    assert result.key_algorithm == "EC_prime256v1"
    assert result.signature_algorithm is None


def test_profile_defaults_fill_what_the_request_leaves_out() -> None:
    defaults = {"ttl": "10d", "organization": "Acme Corp", "keyAlgorithm": "RSA_3072",
                "signatureAlgorithm": "RSA-SHA384", "keyUsages": ["digital_signature"],
                "extendedKeyUsages": ["client_auth"]}
    result = evaluate(attributes={"commonName": "api.example.com"}, defaults=defaults)
    assert result.subject.organization == "Acme Corp"
    assert (result.key_algorithm, result.signature_algorithm) == ("RSA_3072", "RSA-SHA384")
    assert result.key_usages == {"digital_signature"}
    assert result.extended_key_usages == {"client_auth"}
    assert result.validity.ttl_seconds == 10 * 86400


def test_request_values_win_over_profile_defaults() -> None:
    result = evaluate(
        attributes={"commonName": "api.example.com", "ttl": "1d", "keyAlgorithm": "ED25519"},
        defaults={"ttl": "30d", "commonName": "default.example.com", "keyAlgorithm": "RSA_2048"},
    )
    assert (result.subject.common_name, result.key_algorithm, result.validity.ttl_seconds) == (
        "api.example.com", "ED25519", 86400)


def test_policy_required_eku_is_the_default_when_nobody_names_one() -> None:
    rules = POLICY.model_copy(update={"extended_key_usages": PolicyRules.model_validate(
        {"extendedKeyUsages": {"required": ["client_auth"]}}).extended_key_usages})
    assert evaluate(attributes={"commonName": "api.example.com"}, rules=rules).extended_key_usages == {
        "client_auth"}


def test_explicit_window_becomes_the_validity_in_utc() -> None:
    result = evaluate(attributes={"commonName": "api.example.com", "notBefore": "2025-06-01T14:00:00+02:00",
                                  "notAfter": "2025-07-01T12:00:00Z"})
    assert result.validity == Validity(not_before=NOW, not_after=datetime(2025, 7, 1, 12, tzinfo=UTC))


def test_request_without_any_ttl_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="no validity"):
        evaluate(attributes={"commonName": "api.example.com"}, defaults={"organization": "Acme"})


def test_ca_request_gets_ca_key_usages_and_no_eku() -> None:
    result = evaluate(attributes={"commonName": "ca.example.com", "basicConstraints": {"isCA": True,
                                                                                         "pathLength": 0}})
    assert (result.is_ca, result.path_length) == (True, 0)
    assert result.key_usages == {"key_cert_sign", "crl_sign"}
    assert result.extended_key_usages == frozenset()


def test_request_breaking_three_rules_gets_one_violation_naming_all_three() -> None:
    with pytest.raises(PolicyViolation) as caught:
        evaluate(attributes={"commonName": "api.evil.org", "organization": "Evil Inc", "ttl": "1y"})
    assert [e.field for e in caught.value.errors] == [
        "attributes.commonName", "attributes.organization", "attributes.ttl"]
    for fragment in ("api.evil.org", "Evil Inc", "1y"):
        assert fragment in caught.value.detail


@pytest.mark.parametrize(
    ("attributes", "field", "message"),
    [
        ({"keyUsages": ["key_cert_sign"]}, "attributes.keyUsages",
         "key_cert_sign requires basicConstraints.isCA"),
        ({"basicConstraints": {"isCA": True}, "keyUsages": ["crl_sign"]}, "attributes.keyUsages",
         "needs key_cert_sign"),
        ({"basicConstraints": {"pathLength": 1}}, "attributes.basicConstraints.pathLength",
         "only allowed with isCA"),
        ({"keyUsages": ["digital_signature", "encipher_only"]}, "attributes.keyUsages",
         "encipher_only requires key_agreement"),
        ({"notBefore": "2020-01-01T00:00:00Z", "notAfter": "2020-02-01T00:00:00Z"}, "attributes.notAfter",
         "is not in the future"),
    ],
    ids=["key-cert-sign-on-leaf", "ca-without-key-cert-sign", "path-length-on-leaf", "encipher-only-alone",
         "window-in-the-past"],
)
def test_rfc5280_incoherent_request_is_a_violation(
    attributes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(PolicyViolation) as caught:
        evaluate(attributes={"commonName": "api.example.com", **attributes})
    assert (field, True) in [(e.field, message in e.message) for e in caught.value.errors]


def test_request_without_any_name_is_a_violation() -> None:
    with pytest.raises(PolicyViolation, match="needs a subject name or at least one altName"):
        evaluate(attributes={})


# --- the attributes model ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("attributes", "fragment"),
    [
        ({"altNames": [{"type": "dns_name", "value": "bad_host.example.com"}]}, "not a valid DNS name"),
        ({"altNames": [{"type": "dns_name", "value": "a.*.example.com"}]}, "not a valid DNS name"),
        ({"altNames": [{"type": "dns_name", "value": "bücher.example"}]}, "'xn--' form"),
        ({"altNames": [{"type": "ip_address", "value": "10.0.0.256"}]}, "not an IPv4 or IPv6 address"),
        ({"altNames": [{"type": "email", "value": "a@b@example.com"}]}, "not an email address"),
        ({"altNames": [{"type": "uri", "value": "/relative/path"}]}, "absolute URI with a scheme"),
        ({"altNames": [{"type": "x400", "value": "x"}]}, "'dns_name', 'ip_address', 'email' or 'uri'"),
        ({"altNames": [{"type": "dns_name", "value": f"h{i}.example.com"} for i in range(101)]},
         "at most 100 items"),
        ({"country": "USA"}, "String should match pattern"),
        ({"commonName": "a" * 65}, "at most 64 characters"),
        ({"locality": "a" * 129}, "at most 128 characters"),
        ({"commonName": "evil\nname"}, "control characters"),
        ({"ttl": "90"}, "no unit"),
        ({"ttl": "1d", "notBefore": "2025-06-01T00:00:00Z", "notAfter": "2025-06-02T00:00:00Z"}, "not both"),
        ({"notBefore": "2025-06-01T00:00:00Z"}, "given together"),
        ({"notBefore": "2025-06-02T00:00:00Z", "notAfter": "2025-06-01T00:00:00Z"}, "later than notBefore"),
        ({"notBefore": "2025-06-01T00:00:00", "notAfter": "2025-06-02T00:00:00"}, "timezone"),
        ({"signatureAlgorithm": "RSA-MD5"}, "'RSA-SHA256'"),
        ({"keyUsages": ["server_auth"]}, "'digital_signature'"),
    ],
    ids=["dns-underscore", "dns-inner-wildcard", "dns-unicode", "ip", "email-two-ats", "uri-relative",
         "unknown-san-type", "101-alt-names", "country-three-letters", "cn-too-long", "locality-too-long",
         "control-character", "ttl-no-unit", "ttl-and-window", "half-window", "inverted-window",
         "naive-datetime", "unknown-signature", "eku-as-key-usage"],
)
def test_malformed_attributes_are_rejected_naming_the_problem(
    attributes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        IssueAttributes.model_validate(attributes)


def test_unknown_attribute_field_is_ignored() -> None:
    """Unknown fields are ignored (DESIGN.md 5.1): the attributes are those without it."""
    attributes = IssueAttributes.model_validate({"commonName": "api.example.com", "common_name_typo": "x"})
    assert attributes == IssueAttributes.model_validate({"commonName": "api.example.com"})


def test_misspelled_is_ca_is_ignored_so_the_certificate_is_not_a_ca() -> None:
    """A typo must not silently pass as what it meant: ``isCa`` (for ``isCA``) is an unknown field, ignored
    (DESIGN.md 5.1), so the request is one with isCA absent, a leaf, even under a policy that allows CAs."""
    typo = evaluate(attributes={"commonName": "api.example.com", "basicConstraints": {"isCa": True}})
    plain = evaluate(attributes={"commonName": "api.example.com"})

    assert (typo.is_ca, typo.path_length) == (False, None)
    assert typo == plain
    assert "key_cert_sign" not in typo.key_usages


def test_alt_name_values_are_normalized() -> None:
    attributes = IssueAttributes.model_validate({"country": "de", "altNames": [
        {"type": "dns_name", "value": "*.Example.COM"}, {"type": "ip_address", "value": "2001:DB8:0:0::1"},
        {"type": "email", "value": "Ops@Example.com"}, {"type": "uri", "value": "spiffe://example.org/w"}]})
    assert attributes.country == "DE"
    assert [a.value for a in attributes.alt_names] == [
        "*.example.com", "2001:db8::1", "Ops@example.com", "spiffe://example.org/w"]


def test_algorithm_names_match_the_key_module() -> None:
    assert get_args(KeyAlgorithmName) == KEY_ALGORITHMS
    assert get_args(SignatureAlgorithmName) == SIGNATURE_ALGORITHMS


def test_api_config_defaults_to_no_auto_renewal() -> None:
    assert ApiConfig() == ApiConfig(auto_renew=False, renew_before_days=None)
    assert ApiConfig.model_validate({"autoRenew": True, "renewBeforeDays": 30}).renew_before_days == 30
    with pytest.raises(ValidationError):
        ApiConfig.model_validate({"renewBeforeDays": 0})


def test_window_longer_than_policy_is_a_violation_on_not_after() -> None:
    with pytest.raises(PolicyViolation) as caught:
        evaluate(attributes={"commonName": "api.example.com", "notBefore": NOW.isoformat(),
                             "notAfter": (NOW + timedelta(days=120)).isoformat()})
    assert [e.field for e in caught.value.errors] == ["attributes.notAfter"]
