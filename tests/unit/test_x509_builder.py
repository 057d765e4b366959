"""The X.509 builder: what each certificate contains, and that real checkers accept it.

Every chain is checked three ways (DESIGN.md section 6): pkilint's RFC 5280 linter (its CLI, no
ERROR or FATAL finding), ``openssl verify``, and ``cryptography.x509.verification``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from shared.errors import PolicyViolation
from shared.pki import keys
from shared.pki.builder import (
    build_ca_certificate,
    build_leaf_certificate,
    build_self_signed_certificate,
    chain_pem,
    key_algorithm_of,
    new_serial,
    resolve_validity,
    to_pem,
)
from shared.pki.keys import PrivateKey
from shared.pki.template import AltName, CertificateTemplate, SubjectName, Validity

NOW = datetime.now(UTC).replace(microsecond=0)
NOT_BEFORE = NOW - timedelta(minutes=5)
CA_NOT_AFTER = NOW + timedelta(days=3650)
LEAF_NOT_AFTER = NOW + timedelta(days=90)
HOST = "www.example.com"

LINT_PKIX_CERT = Path(sys.executable).parent / "lint_pkix_cert"
OPENSSL = shutil.which("openssl")
_FINDING = re.compile(r"^\s+(?P<code>\S+) \((?P<severity>FATAL|ERROR|WARNING|NOTICE|INFO|DEBUG)\)")


# ---------------------------------------------------------------------------------------------
# helpers


class _KeyPool:
    """Keys generated once per test session: RSA generation dominates the run time otherwise."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], PrivateKey] = {}

    def get(self, algorithm: str, index: int = 0) -> PrivateKey:
        if (algorithm, index) not in self._keys:
            self._keys[(algorithm, index)] = keys.generate_private_key(algorithm)
        return self._keys[(algorithm, index)]


@pytest.fixture(scope="session")
def key_pool() -> _KeyPool:
    return _KeyPool()


def _usages_for(algorithm: str) -> frozenset[str]:
    # What a TLS server key of each family legitimately carries (RFC 5480 / 8410 / 3279).
    if algorithm.startswith("RSA"):
        return frozenset({"digital_signature", "key_encipherment"})
    return frozenset({"digital_signature"})


def _template(algorithm: str = "EC_prime256v1", **changes: object) -> CertificateTemplate:
    template = CertificateTemplate(
        subject=SubjectName(common_name=HOST, organization="Example Corp", country="US"),
        alt_names=(
            AltName("dns_name", HOST), AltName("ip_address", "192.0.2.10"),
            AltName("email", "ops@example.com"), AltName("uri", "https://example.com/service"),
        ),
        key_usages=_usages_for(algorithm),
        extended_key_usages=frozenset({"server_auth", "client_auth"}),
        key_algorithm=algorithm,
        signature_algorithm=None,
        validity=Validity(ttl_seconds=90 * 86400),
    )
    return replace(template, **changes)  # type: ignore[arg-type]


def _root(key: PrivateKey, name: str = "Example Root CA", path_length: int | None = None) -> x509.Certificate:
    return build_ca_certificate(
        subject=SubjectName(common_name=name, organization="Example Corp", country="US"),
        public_key=key.public_key(), issuer_cert=None, issuer_key=key, signature_algorithm=None,
        not_before=NOT_BEFORE, not_after=CA_NOT_AFTER, path_length=path_length, serial=new_serial(),
    )


def _intermediate(
    key: PrivateKey, issuer_cert: x509.Certificate, issuer_key: PrivateKey, name: str, path_length: int | None
) -> x509.Certificate:
    return build_ca_certificate(
        subject=SubjectName(common_name=name, organization="Example Corp", organizational_unit="PKI"),
        public_key=key.public_key(), issuer_cert=issuer_cert, issuer_key=issuer_key,
        signature_algorithm=None, not_before=NOT_BEFORE, not_after=CA_NOT_AFTER - timedelta(days=1),
        path_length=path_length, serial=new_serial(),
    )


def _leaf(
    template: CertificateTemplate, key: PrivateKey, issuer_cert: x509.Certificate, issuer_key: PrivateKey
) -> x509.Certificate:
    return build_leaf_certificate(
        template=template, public_key=key.public_key(), issuer_cert=issuer_cert, issuer_key=issuer_key,
        serial=new_serial(), not_before=NOT_BEFORE, not_after=LEAF_NOT_AFTER,
    )


@dataclass(frozen=True)
class Chain:
    root: x509.Certificate
    intermediate: x509.Certificate
    second_intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: PrivateKey

    def all(self) -> list[x509.Certificate]:
        return [self.root, self.intermediate, self.second_intermediate, self.leaf]


def _chain(pool: _KeyPool, algorithms: tuple[str, str, str, str]) -> Chain:
    """root -> intermediate (pathLen 1) -> second-level intermediate (pathLen 0) -> leaf."""
    root_key, int_key, int2_key, leaf_key = (pool.get(alg, i) for i, alg in enumerate(algorithms))
    root = _root(root_key)
    intermediate = _intermediate(int_key, root, root_key, "Example Intermediate CA", 1)
    second = _intermediate(int2_key, intermediate, int_key, "Example Issuing CA", 0)
    leaf = _leaf(_template(algorithms[3]), leaf_key, second, int2_key)
    return Chain(root, intermediate, second, leaf, leaf_key)


def _pkilint_findings(cert: x509.Certificate) -> list[tuple[str, str]]:
    """(severity, code) of every finding pkilint's RFC 5280 linter reports for ``cert``."""
    result = subprocess.run(
        [str(LINT_PKIX_CERT), "lint", "-s", "ALL", "-"],
        input=to_pem(cert).encode(), capture_output=True, timeout=60, check=False,
    )
    assert not result.stderr.strip(), result.stderr.decode()
    return [
        (match["severity"], match["code"])
        for line in result.stdout.decode().splitlines()
        if (match := _FINDING.match(line))
    ]


def _errors_by_subject(
    findings: dict[x509.Certificate, list[tuple[str, str]]],
) -> dict[str, list[tuple[str, str]]]:
    return {
        cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}": bad
        for cert, found in findings.items()
        if (bad := [f for f in found if f[0] in ("ERROR", "FATAL")])
    }


def _pkilint_errors(certs: list[x509.Certificate]) -> dict[str, list[tuple[str, str]]]:
    """ERROR and FATAL findings by certificate subject; each cert is linted in its own process."""
    with ThreadPoolExecutor(max_workers=len(certs)) as pool:
        return _errors_by_subject(dict(zip(certs, pool.map(_pkilint_findings, certs), strict=True)))


def _openssl_verify(tmp_path: Path, chain: Chain) -> subprocess.CompletedProcess[str]:
    assert OPENSSL, "openssl is required"
    (tmp_path / "root.pem").write_text(to_pem(chain.root))
    (tmp_path / "intermediates.pem").write_text(chain_pem([chain.second_intermediate, chain.intermediate]))
    (tmp_path / "leaf.pem").write_text(to_pem(chain.leaf))
    return subprocess.run(
        [OPENSSL, "verify", "-x509_strict", "-CAfile", "root.pem", "-untrusted", "intermediates.pem",
         "-purpose", "sslserver", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def _violation_fields(excinfo: pytest.ExceptionInfo[PolicyViolation]) -> list[str]:
    return [error.field for error in excinfo.value.errors]


# Every key algorithm used at every level of its chain, except RSA_4096: a 4096-bit key takes over a
# second to generate, so that chain puts 4096-bit keys at the root and the leaf only and reuses the
# RSA_3072 chain's intermediate keys. The mixed chain checks each issuer's default signature.
CHAIN_ALGORITHMS: dict[str, tuple[str, str, str, str]] = {
    **{alg: (alg, alg, alg, alg) for alg in keys.KEY_ALGORITHMS},
    "RSA_4096": ("RSA_4096", "RSA_3072", "RSA_3072", "RSA_4096"),
    "mixed": ("EC_secp384r1", "RSA_2048", "ED25519", "EC_prime256v1"),
}


@pytest.fixture(scope="module")
def chains(key_pool: _KeyPool) -> dict[str, Chain]:
    return {name: _chain(key_pool, algorithms) for name, algorithms in CHAIN_ALGORITHMS.items()}


@pytest.fixture(scope="module")
def chain_pkilint_errors(chains: dict[str, Chain]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    # One pool for all chains keeps every core busy: each pkilint run is a separate process.
    certs = [cert for chain in chains.values() for cert in chain.all()]
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        findings = dict(zip(certs, pool.map(_pkilint_findings, certs), strict=True))
    return {name: _errors_by_subject({cert: findings[cert] for cert in chain.all()})
            for name, chain in chains.items()}


@pytest.fixture(params=list(CHAIN_ALGORITHMS))
def chain_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def chain(chains: dict[str, Chain], chain_name: str) -> Chain:
    return chains[chain_name]


# ---------------------------------------------------------------------------------------------
# serial numbers


def test_serial_is_positive_and_encodes_in_at_most_20_octets() -> None:
    for _ in range(2000):
        serial = new_serial()
        assert serial > 0
        # DER INTEGER content octets of a positive number: bit_length // 8 + 1 (sign bit must be 0).
        assert serial.bit_length() // 8 + 1 <= 20


def test_serials_are_unique_over_10000_draws() -> None:
    serials = [new_serial() for _ in range(10_000)]
    assert len(set(serials)) == len(serials)


def test_serials_carry_far_more_than_64_random_bits() -> None:
    serials = [new_serial() for _ in range(1000)]
    # With 159 random bits the top bit is set in about half of the draws; with 64 it never would be.
    assert max(s.bit_length() for s in serials) == 159
    assert sum(s.bit_length() >= 150 for s in serials) > 900


def test_builder_refuses_a_serial_that_is_not_positive_or_too_long(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    for serial in (0, -1, 2**159):
        with pytest.raises(ValueError, match="serial"):
            build_ca_certificate(
                subject=SubjectName(common_name="Root"), public_key=key.public_key(), issuer_cert=None,
                issuer_key=key, signature_algorithm=None, not_before=NOT_BEFORE, not_after=CA_NOT_AFTER,
                path_length=None, serial=serial,
            )


# ---------------------------------------------------------------------------------------------
# validity


def test_ttl_validity_is_backdated_and_counted_from_now() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    not_before, not_after = resolve_validity(
        Validity(ttl_seconds=3600), now=now, backdate=timedelta(minutes=5), issuer_not_after=None
    )
    assert not_before == datetime(2030, 1, 1, 11, 55, tzinfo=UTC)
    assert not_after == datetime(2030, 1, 1, 13, 0, tzinfo=UTC)


def test_explicit_validity_window_is_kept_truncated_to_seconds_in_utc() -> None:
    from zoneinfo import ZoneInfo

    start = datetime(2030, 6, 1, 8, 0, 0, 500_000, tzinfo=ZoneInfo("Europe/Paris"))
    not_before, not_after = resolve_validity(
        Validity(not_before=start, not_after=start + timedelta(days=1)),
        now=start, backdate=timedelta(minutes=5), issuer_not_after=None,
    )
    assert not_before == datetime(2030, 6, 1, 6, 0, 0, tzinfo=UTC)
    assert not_after == datetime(2030, 6, 2, 6, 0, 0, tzinfo=UTC)
    assert not_before.tzinfo is UTC and not_after.microsecond == 0


def test_naive_datetimes_are_taken_as_utc() -> None:
    not_before, _ = resolve_validity(
        Validity(ttl_seconds=60), now=datetime(2030, 1, 1), backdate=timedelta(0), issuer_not_after=None
    )
    assert not_before == datetime(2030, 1, 1, tzinfo=UTC)


def test_validity_past_the_issuers_not_after_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(PolicyViolation) as excinfo:
        resolve_validity(
            Validity(ttl_seconds=2 * 86400), now=NOW, backdate=timedelta(minutes=5),
            issuer_not_after=NOW + timedelta(days=1),
        )
    assert _violation_fields(excinfo) == ["attributes.ttl"]
    assert "past the issuing CA's notAfter" in str(excinfo.value)


def test_validity_ending_exactly_at_the_issuers_not_after_is_allowed() -> None:
    _, not_after = resolve_validity(
        Validity(ttl_seconds=86400), now=NOW, backdate=timedelta(0), issuer_not_after=NOW + timedelta(days=1)
    )
    assert not_after == NOW + timedelta(days=1)


def test_explicit_not_after_past_the_issuer_names_the_not_after_field() -> None:
    with pytest.raises(PolicyViolation) as excinfo:
        resolve_validity(
            Validity(not_before=NOW, not_after=NOW + timedelta(days=10)), now=NOW,
            backdate=timedelta(0), issuer_not_after=NOW + timedelta(days=1),
        )
    assert _violation_fields(excinfo) == ["attributes.notAfter"]


def test_not_before_at_or_after_not_after_is_rejected() -> None:
    with pytest.raises(PolicyViolation, match="must be earlier than notAfter"):
        resolve_validity(
            Validity(not_before=NOW, not_after=NOW), now=NOW, backdate=timedelta(0), issuer_not_after=None
        )


def test_non_positive_ttl_is_rejected() -> None:
    for ttl in (0, -60):
        with pytest.raises(PolicyViolation) as excinfo:
            resolve_validity(Validity(ttl_seconds=ttl), now=NOW, backdate=timedelta(0), issuer_not_after=None)
        assert _violation_fields(excinfo) == ["attributes.ttl"]


def test_validity_without_ttl_or_not_after_is_rejected() -> None:
    with pytest.raises(PolicyViolation, match="ttl or a notAfter is required"):
        resolve_validity(Validity(), now=NOW, backdate=timedelta(0), issuer_not_after=None)


def test_builder_rejects_a_leaf_outliving_its_issuer(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = _root(key)
    with pytest.raises(PolicyViolation, match="past the issuing CA's notAfter"):
        build_leaf_certificate(
            template=_template(), public_key=key_pool.get("EC_prime256v1", 1).public_key(), issuer_cert=root,
            issuer_key=key, serial=new_serial(), not_before=NOT_BEFORE,
            not_after=CA_NOT_AFTER + timedelta(seconds=1),
        )


# ---------------------------------------------------------------------------------------------
# real checkers, for every key algorithm


def test_every_certificate_of_the_chain_passes_pkilint_without_error(
    chain_pkilint_errors: dict[str, dict[str, list[tuple[str, str]]]], chain_name: str
) -> None:
    assert chain_pkilint_errors[chain_name] == {}


def test_leaf_chain_verifies_with_openssl(chain: Chain, tmp_path: Path) -> None:
    result = _openssl_verify(tmp_path, chain)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "leaf.pem: OK"


def _uses_ed25519(chain: Chain) -> bool:
    return any(isinstance(cert.public_key(), ed25519.Ed25519PublicKey) for cert in chain.all())


def test_server_leaf_verifies_with_cryptography_webpki_verifier(chain: Chain) -> None:
    verifier = (
        PolicyBuilder().store(Store([chain.root])).time(NOW).build_server_verifier(x509.DNSName(HOST))
    )
    if _uses_ed25519(chain):
        # cryptography's verifier implements the CA/Browser Forum Web PKI profile, whose algorithm
        # list has no Ed25519 (openssl verify and pkilint above still cover these chains).
        with pytest.raises(VerificationError, match="Forbidden public key algorithm"):
            verifier.verify(chain.leaf, [chain.second_intermediate, chain.intermediate])
        return
    path = verifier.verify(chain.leaf, [chain.second_intermediate, chain.intermediate])
    assert path == [chain.leaf, chain.second_intermediate, chain.intermediate, chain.root]


def test_server_leaf_verifies_by_ip_address_with_cryptography(chain: Chain) -> None:
    verifier = (
        PolicyBuilder().store(Store([chain.root])).time(NOW)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("192.0.2.10")))
    )
    if _uses_ed25519(chain):
        # As by DNS name: the Web PKI profile has no Ed25519 (openssl and pkilint cover these chains).
        with pytest.raises(VerificationError, match="Forbidden public key algorithm"):
            verifier.verify(chain.leaf, [chain.second_intermediate, chain.intermediate])
        return
    verifier.verify(chain.leaf, [chain.second_intermediate, chain.intermediate])


def test_each_certificate_is_signed_with_its_issuers_default_algorithm(chain: Chain) -> None:
    oid = SignatureAlgorithmOID
    expected = {
        "RSA-SHA256": oid.RSA_WITH_SHA256, "RSA-SHA384": oid.RSA_WITH_SHA384,
        "RSA-SHA512": oid.RSA_WITH_SHA512,
        "ECDSA-SHA256": oid.ECDSA_WITH_SHA256, "ECDSA-SHA384": oid.ECDSA_WITH_SHA384,
        "ECDSA-SHA512": oid.ECDSA_WITH_SHA512, "ED25519": oid.ED25519,
    }
    certs = chain.all()
    issuers = [chain.root, *certs[:-1]]
    for cert, issuer in zip(certs, issuers, strict=True):
        issuer_algorithm = keys.algorithm_of_public_key(issuer.public_key())
        assert cert.signature_algorithm_oid == expected[keys.DEFAULT_SIGNATURE[issuer_algorithm]]
        cert.verify_directly_issued_by(issuer)


# ---------------------------------------------------------------------------------------------
# CA certificates


def test_root_is_self_signed_and_its_aki_is_its_own_ski(key_pool: _KeyPool) -> None:
    root = _root(key_pool.get("EC_prime256v1"))
    ski = _extension(root, x509.SubjectKeyIdentifier).value
    aki = _extension(root, x509.AuthorityKeyIdentifier).value
    assert root.issuer == root.subject
    assert isinstance(ski, x509.SubjectKeyIdentifier) and isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ski.digest
    assert root.version == x509.Version.v3
    root.verify_directly_issued_by(root)


def test_intermediate_aki_holds_only_the_issuers_key_identifier(chain: Chain) -> None:
    aki = _extension(chain.intermediate, x509.AuthorityKeyIdentifier).value
    root_ski = _extension(chain.root, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(root_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == root_ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    assert chain.intermediate.issuer == chain.root.subject


def test_ca_certificates_carry_critical_basic_constraints_and_key_usage(chain: Chain) -> None:
    for cert, path_length in ((chain.root, None), (chain.intermediate, 1), (chain.second_intermediate, 0)):
        basic = _extension(cert, x509.BasicConstraints)
        usage = _extension(cert, x509.KeyUsage)
        assert basic.critical and usage.critical
        assert basic.value == x509.BasicConstraints(ca=True, path_length=path_length)
        assert isinstance(usage.value, x509.KeyUsage)
        assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
        assert not usage.value.key_encipherment


def test_ca_subject_is_ordered_country_state_locality_org_unit_common_name(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = build_ca_certificate(
        subject=SubjectName(common_name="Root", organization="Org", organizational_unit="Unit", country="de",
                            state="Berlin", locality="Berlin"),
        public_key=key.public_key(), issuer_cert=None, issuer_key=key, signature_algorithm=None,
        not_before=NOT_BEFORE, not_after=CA_NOT_AFTER, path_length=None, serial=new_serial(),
    )
    assert [attr.oid for attr in root.subject] == [
        NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
        NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME,
    ]
    assert root.subject.rfc4514_string() == "CN=Root,OU=Unit,O=Org,L=Berlin,ST=Berlin,C=DE"


def test_ca_without_a_subject_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    with pytest.raises(PolicyViolation) as excinfo:
        build_ca_certificate(
            subject=SubjectName(), public_key=key.public_key(), issuer_cert=None, issuer_key=key,
            signature_algorithm=None, not_before=NOT_BEFORE, not_after=CA_NOT_AFTER, path_length=None,
            serial=new_serial(),
        )
    assert _violation_fields(excinfo) == ["commonName"]


def test_ca_signature_algorithm_must_suit_the_issuer_key(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    with pytest.raises(PolicyViolation) as excinfo:
        build_ca_certificate(
            subject=SubjectName(common_name="Root"), public_key=key.public_key(), issuer_cert=None,
            issuer_key=key, signature_algorithm="RSA-SHA256", not_before=NOT_BEFORE,
            not_after=CA_NOT_AFTER, path_length=None, serial=new_serial(),
        )
    assert _violation_fields(excinfo) == ["attributes.signatureAlgorithm"]


# ---------------------------------------------------------------------------------------------
# leaf certificates


def test_leaf_is_v3_with_critical_ca_false_and_critical_key_usage(chain: Chain) -> None:
    leaf = chain.leaf
    assert leaf.version == x509.Version.v3
    basic = _extension(leaf, x509.BasicConstraints)
    assert basic.critical and basic.value == x509.BasicConstraints(ca=False, path_length=None)
    usage = _extension(leaf, x509.KeyUsage)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage) and usage.value.digital_signature
    assert not usage.value.key_cert_sign
    ski = _extension(leaf, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(chain.leaf_key.public_key())
    aki = _extension(leaf, x509.AuthorityKeyIdentifier).value
    issuer_ski = _extension(chain.second_intermediate, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(issuer_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == issuer_ski.digest


def test_leaf_extended_key_usages_come_from_the_template_non_critical(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = _root(key)
    all_ekus = frozenset({"server_auth", "client_auth", "code_signing", "email_protection", "ocsp_signing",
                          "any_purpose"})
    leaf = _leaf(_template(extended_key_usages=all_ekus), key_pool.get("EC_prime256v1", 1), root, key)
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert isinstance(eku.value, x509.ExtendedKeyUsage)
    assert set(eku.value) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING,
        ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.OCSP_SIGNING,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
    assert _pkilint_errors([leaf]) == {}


def test_time_stamping_usage_stands_alone_in_a_critical_eku(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = _root(key)
    template = _template(extended_key_usages=frozenset({"time_stamping"}),
                         key_usages=frozenset({"digital_signature", "non_repudiation"}))
    leaf = _leaf(template, key_pool.get("EC_prime256v1", 1), root, key)
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]  # type: ignore[call-overload]
    assert _pkilint_errors([leaf]) == {}
    with pytest.raises(PolicyViolation, match="RFC 3161"):
        _leaf(_template(extended_key_usages=frozenset({"time_stamping", "server_auth"})),
              key_pool.get("EC_prime256v1", 1), root, key)


def test_leaf_without_extended_key_usages_has_no_eku_extension(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = _root(key)
    leaf = _leaf(_template(extended_key_usages=frozenset()), key_pool.get("EC_prime256v1", 1), root, key)
    with pytest.raises(x509.ExtensionNotFound):
        _extension(leaf, x509.ExtendedKeyUsage)


def test_alt_names_map_to_their_general_name_types(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    root = _root(key)
    template = _template(alt_names=(
        AltName("dns_name", "api.example.com"), AltName("ip_address", "2001:db8::1"),
        AltName("email", "ops@example.com"), AltName("uri", "https://example.com/service"),
    ))
    leaf = _leaf(template, key_pool.get("EC_prime256v1", 1), root, key)
    san = _extension(leaf, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert isinstance(san.value, x509.SubjectAlternativeName)
    assert list(san.value) == [
        x509.DNSName("api.example.com"), x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RFC822Name("ops@example.com"), x509.UniformResourceIdentifier("https://example.com/service"),
    ]


def test_san_is_critical_when_the_subject_is_empty(key_pool: _KeyPool, tmp_path: Path) -> None:
    root_key, int_key = key_pool.get("EC_prime256v1"), key_pool.get("EC_prime256v1", 1)
    root = _root(root_key)
    intermediate = _intermediate(int_key, root, root_key, "Issuing CA", 0)
    leaf = _leaf(_template(subject=SubjectName()), key_pool.get("EC_prime256v1", 2), intermediate, int_key)
    assert len(leaf.subject) == 0
    assert _extension(leaf, x509.SubjectAlternativeName).critical
    assert _pkilint_errors([leaf]) == {}
    # openssl's -x509_strict path check still accepts it.
    result = _openssl_verify(tmp_path, Chain(root, intermediate, intermediate, leaf, key_pool.get("ED25519")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_empty_subject_without_alt_names_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    with pytest.raises(PolicyViolation) as excinfo:
        _leaf(_template(subject=SubjectName(), alt_names=()), key_pool.get("EC_prime256v1", 1), _root(key),
              key)
    assert _violation_fields(excinfo) == ["attributes.altNames"]


def test_invalid_alt_names_are_all_reported_with_their_position(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(alt_names=(
        AltName("dns_name", "ok.example.com"), AltName("dns_name", "bad_label.example.com"),
        AltName("ip_address", "10.0.0.300"), AltName("email", "no-at-sign"), AltName("uri", "/relative/path"),
        AltName("dns_name", "bücher.example"),
    ))
    with pytest.raises(PolicyViolation) as excinfo:
        _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)
    assert _violation_fields(excinfo) == [
        "attributes.altNames[1].value", "attributes.altNames[2].value", "attributes.altNames[3].value",
        "attributes.altNames[4].value", "attributes.altNames[5].value",
    ]


def test_non_repudiation_sets_the_content_commitment_bit(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    for name in ("non_repudiation", "content_commitment"):
        template = _template(key_usages=frozenset({"digital_signature", name}))
        leaf = _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)
        usage = _extension(leaf, x509.KeyUsage).value
        assert isinstance(usage, x509.KeyUsage) and usage.content_commitment


def test_key_agreement_with_encipher_only_is_accepted_for_an_ec_key(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(key_usages=frozenset({"key_agreement", "encipher_only"}),
                         extended_key_usages=frozenset())
    leaf = _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)
    usage = _extension(leaf, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.key_agreement and usage.encipher_only
    assert _pkilint_errors([leaf]) == {}


@pytest.mark.parametrize(
    ("subject_algorithm", "usages"),
    [
        ("ED25519", {"digital_signature", "key_agreement"}),
        ("EC_prime256v1", {"key_encipherment"}),
        ("EC_prime256v1", {"data_encipherment"}),
        ("ED25519", {"key_encipherment", "data_encipherment"}),
        ("RSA_2048", {"digital_signature", "key_agreement"}),
    ],
)
def test_key_usage_the_subject_key_cannot_perform_is_rejected_naming_it(
    key_pool: _KeyPool, subject_algorithm: str, usages: set[str]
) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(subject_algorithm, key_usages=frozenset(usages))
    with pytest.raises(PolicyViolation) as excinfo:
        _leaf(template, key_pool.get(subject_algorithm, 1), _root(key), key)
    assert _violation_fields(excinfo) == ["attributes.keyUsages"]
    assert all(usage in str(excinfo.value) for usage in usages - {"digital_signature"})


@pytest.mark.parametrize("subject_algorithm", ["EC_prime256v1", "ED25519"])
def test_encipherment_asked_beside_a_signing_usage_is_left_out_for_keys_that_cannot_encipher(
    key_pool: _KeyPool, subject_algorithm: str
) -> None:
    """Upstream's clients ask for key_encipherment with EC keys; it is dropped, not refused."""
    key = key_pool.get("EC_prime256v1")
    template = _template(subject_algorithm,
                         key_usages=frozenset({"digital_signature", "key_encipherment", "data_encipherment"}))
    cert = _leaf(template, key_pool.get(subject_algorithm, 1), _root(key), key)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.data_encipherment


def test_encipher_only_without_key_agreement_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(key_usages=frozenset({"digital_signature", "decipher_only"}))
    with pytest.raises(PolicyViolation, match="only with key_agreement"):
        _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)


def test_unknown_or_missing_key_usages_are_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    for usages, message in ((frozenset({"sign_everything"}), "unknown key usage"),
                            (frozenset(), "at least one key usage")):
        with pytest.raises(PolicyViolation, match=message):
            _leaf(_template(key_usages=usages), key_pool.get("EC_prime256v1", 1), _root(key), key)


def test_unknown_extended_key_usage_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    with pytest.raises(PolicyViolation) as excinfo:
        _leaf(_template(extended_key_usages=frozenset({"teleport"})), key_pool.get("EC_prime256v1", 1),
              _root(key), key)
    assert _violation_fields(excinfo) == ["attributes.extendedKeyUsages"]


def test_key_cert_sign_without_is_ca_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(key_usages=frozenset({"digital_signature", "key_cert_sign"}))
    with pytest.raises(PolicyViolation, match=r"requires basicConstraints\.isCA"):
        _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)


def test_ca_template_yields_a_subordinate_ca_that_can_sign(key_pool: _KeyPool, tmp_path: Path) -> None:
    root_key, sub_key = key_pool.get("EC_prime256v1"), key_pool.get("EC_prime256v1", 1)
    root = _root(root_key)
    sub = _leaf(
        _template(subject=SubjectName(common_name="Sub CA"), alt_names=(), extended_key_usages=frozenset(),
                  is_ca=True, path_length=0),
        sub_key, root, root_key,
    )
    basic = _extension(sub, x509.BasicConstraints)
    assert basic.critical and basic.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _extension(sub, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.key_cert_sign and usage.crl_sign
    leaf = _leaf(_template(), key_pool.get("EC_prime256v1", 2), sub, sub_key)
    assert _pkilint_errors([sub, leaf]) == {}
    result = _openssl_verify(tmp_path, Chain(root, sub, sub, leaf, key_pool.get("EC_prime256v1", 2)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_requested_signature_algorithm_is_used(key_pool: _KeyPool) -> None:
    key = key_pool.get("RSA_2048")
    leaf = _leaf(_template(signature_algorithm="RSA-SHA512"), key_pool.get("EC_prime256v1"), _root(key), key)
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA512
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA512)


def test_signature_algorithm_the_issuer_key_cannot_make_is_rejected(key_pool: _KeyPool) -> None:
    key = key_pool.get("RSA_2048")
    for algorithm in ("ECDSA-SHA256", "ED25519", "DSA-SHA1"):
        with pytest.raises(PolicyViolation) as excinfo:
            _leaf(_template(signature_algorithm=algorithm), key_pool.get("EC_prime256v1"), _root(key), key)
        assert _violation_fields(excinfo) == ["attributes.signatureAlgorithm"]


def test_subject_attributes_outside_rfc_5280_bounds_are_all_reported(key_pool: _KeyPool) -> None:
    key = key_pool.get("EC_prime256v1")
    template = _template(subject=SubjectName(common_name="x" * 65, country="USA"))
    with pytest.raises(PolicyViolation) as excinfo:
        _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)
    assert sorted(_violation_fields(excinfo)) == ["attributes.commonName", "attributes.country"]


def test_wildcard_dns_name_is_issued_and_is_pkilints_only_finding(key_pool: _KeyPool) -> None:
    """RFC 6125 wildcards are issued; pkilint's RFC 5280 linter flags them (not preferred name syntax).

    This is the one known ERROR a certificate from this builder can carry; policies that must be
    pkilint-clean should not allow ``*.`` names.
    """
    key = key_pool.get("EC_prime256v1")
    template = _template(alt_names=(AltName("dns_name", "*.example.com"),))
    leaf = _leaf(template, key_pool.get("EC_prime256v1", 1), _root(key), key)
    assert [f for f in _pkilint_findings(leaf) if f[0] in ("ERROR", "FATAL")] == [
        ("ERROR", "pkix.invalid_domain_name_syntax")
    ]


# ---------------------------------------------------------------------------------------------
# self-signed leaves


def test_self_signed_leaf_is_its_own_issuer_and_not_a_ca(key_pool: _KeyPool) -> None:
    certs = []
    for algorithm in ("EC_prime256v1", "ED25519", "RSA_2048"):
        key = key_pool.get(algorithm, 3)
        cert = build_self_signed_certificate(
            template=_template(algorithm), private_key=key, serial=new_serial(),
            not_before=NOT_BEFORE, not_after=LEAF_NOT_AFTER,
        )
        assert cert.issuer == cert.subject
        cert.verify_directly_issued_by(cert)
        basic = _extension(cert, x509.BasicConstraints)
        assert basic.critical and basic.value == x509.BasicConstraints(ca=False, path_length=None)
        ski = _extension(cert, x509.SubjectKeyIdentifier).value
        aki = _extension(cert, x509.AuthorityKeyIdentifier).value
        assert isinstance(ski, x509.SubjectKeyIdentifier) and isinstance(aki, x509.AuthorityKeyIdentifier)
        assert aki.key_identifier == ski.digest
        certs.append(cert)
    assert _pkilint_errors(certs) == {}


def test_self_signed_leaf_needs_a_subject(key_pool: _KeyPool) -> None:
    with pytest.raises(PolicyViolation) as excinfo:
        build_self_signed_certificate(
            template=_template(subject=SubjectName()), private_key=key_pool.get("EC_prime256v1"),
            serial=new_serial(), not_before=NOT_BEFORE, not_after=LEAF_NOT_AFTER,
        )
    assert _violation_fields(excinfo) == ["attributes.commonName"]


# ---------------------------------------------------------------------------------------------
# PEM and helpers


def test_chain_pem_concatenates_certificates_in_order(chain: Chain) -> None:
    certs = [chain.leaf, chain.second_intermediate, chain.intermediate]
    pem = chain_pem(certs)
    assert pem.count("-----BEGIN CERTIFICATE-----") == 3
    assert x509.load_pem_x509_certificates(pem.encode()) == certs
    assert to_pem(chain.leaf) == pem[: len(to_pem(chain.leaf))]


def test_key_algorithm_of_names_keys_as_the_api_does(key_pool: _KeyPool) -> None:
    assert key_algorithm_of(key_pool.get("RSA_2048")) == "RSA_2048"
    assert key_algorithm_of(key_pool.get("EC_secp384r1")) == "EC_secp384r1"
    assert key_algorithm_of(key_pool.get("ED25519")) == "ED25519"
    assert isinstance(key_pool.get("RSA_2048"), rsa.RSAPrivateKey)
    assert isinstance(key_pool.get("EC_secp384r1"), ec.EllipticCurvePrivateKey)
    assert isinstance(key_pool.get("ED25519"), ed25519.Ed25519PrivateKey)
