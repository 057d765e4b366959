"""DESIGN.md section 6 on what the service issues, end to end over the HTTP API, for RSA, EC and
Ed25519 hierarchies (root -> intermediate -> issuing CA, each made with the CA endpoints, and leaf
keys of the same family): the real verifiers accept the leaves as TLS server certificates, the
extensions a leaf must carry are there (critical where they must be), the validity window is
backdated and inside the issuer's, ``certificateChain`` runs from the issuing CA up to the root (and
``removeRootsFromChain`` drops exactly the root), and a self-signed profile's certificates lint clean
and verify against themselves.

The hierarchies and leaves are made once for the module; each test only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from shared.config import Settings
from tests.api_client import ApiClient, Tenant, open_tenant
from tests.invariants.observing import run_sync, self_signed_profile
from tests.issuance.checkers import openssl_verify, pkilint_errors
from tests.issuance.csrs import NEW_KEY, make_csr
from tests.issuance.issuing import CERTIFICATES, server_key_attributes, submit, view_of
from tests.pki.authorities import PROFILES, ca_body, ca_certificate, create_ca
from tests.pki_setup import ISSUE, OPEN_POLICY, POLICIES, Pki
from tests.stack import Stack

KEY_ALGORITHMS = ("RSA_2048", "EC_prime256v1", "ED25519")


@dataclass(frozen=True)
class Leaf:
    name: str
    view: dict[str, Any]  # the request view, as the API answered it once issued
    asked_at: datetime  # just before the request was submitted
    answered_at: datetime  # just after it was answered issued

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.view["certificate"].encode())


@dataclass(frozen=True)
class Hierarchy:
    algorithm: str
    cas: list[x509.Certificate]  # root, intermediate, issuing CA
    leaf: Leaf
    leaf_without_root: Leaf  # requested with removeRootsFromChain: true
    leaf_without_subject: Leaf  # from a CSR with an empty subject and a DNS SAN
    self_signed: Leaf
    certificate_body: dict[str, Any]  # GET /certificates/{id}/certificate of ``leaf``

    @property
    def root(self) -> x509.Certificate:
        return self.cas[0]

    @property
    def issuing(self) -> x509.Certificate:
        return self.cas[-1]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


async def _timed(client: ApiClient, profile_id: str, name: str, **body: Any) -> Leaf:
    """POST /certificates?wait=10 with ``body`` (camelCase fields beside profileId), until issued."""
    asked_at = datetime.now(UTC)
    r = await client.post(ISSUE, {"profileId": profile_id, **body}, params={"wait": "10"})
    view = await view_of(client, r)
    assert view["status"] == "issued", view
    return Leaf(name, view, asked_at, datetime.now(UTC))


async def _ca_chain(admin: ApiClient, project_id: str, algorithm: str, tag: str, *, issuing_ttl: str = "2y"
                    ) -> list[dict[str, Any]]:
    root = await create_ca(admin, ca_body(project_id, f"{tag} root", key_algorithm=algorithm))
    mid = await create_ca(admin, ca_body(project_id, f"{tag} mid", parent=root["id"], key_algorithm=algorithm))
    issuing = await create_ca(admin, ca_body(project_id, f"{tag} issuing", parent=mid["id"], key_algorithm=algorithm,
                                             ttl=issuing_ttl))
    return [root, mid, issuing]


async def _profile(admin: ApiClient, project_id: str, slug: str, ca_id: str, policy_id: str, algorithm: str) -> str:
    r = await admin.post(PROFILES, {
        "projectId": project_id, "slug": slug, "issuerType": "ca", "caId": ca_id, "certificatePolicyId": policy_id,
        "enrollmentType": "api", "apiConfig": {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": algorithm, "extendedKeyUsages": ["server_auth"]}})
    assert r.status == 201, r.body
    profile_id: str = r.body["certificateProfile"]["id"]
    return profile_id


async def _hierarchy(admin: ApiClient, project_id: str, algorithm: str) -> Hierarchy:
    tag = algorithm.lower().replace("_", "-")
    cas = await _ca_chain(admin, project_id, algorithm, tag)
    pems = [(await ca_certificate(admin, ca["id"]))[0] for ca in cas]
    policy = await admin.post(POLICIES, {"projectId": project_id, "name": f"{tag}-policy", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    policy_id = policy.body["certificatePolicy"]["id"]
    profile = await _profile(admin, project_id, tag, cas[-1]["id"], policy_id, algorithm)
    leaf = await _timed(admin, profile, f"{tag}.example.test",
                        attributes=server_key_attributes(f"{tag}.example.test"))
    body = await admin.get(f"{CERTIFICATES}/{leaf.view['certificateId']}/certificate")
    assert body.status == 200, body.body
    without_root = await _timed(admin, profile, f"{tag}-no-root.example.test", attributes=server_key_attributes(
        f"{tag}-no-root.example.test"), removeRootsFromChain=True)
    bare_name = f"{tag}-no-subject.example.test"
    without_subject = await _timed(admin, profile, bare_name, csr=make_csr(
        NEW_KEY[algorithm](), cn=None, sans=(x509.DNSName(bare_name),)))
    pki = Pki(project_id, cas[0]["id"], cas[-1]["id"], policy_id, profile, pems[0], pems[-1])
    self_profile = await self_signed_profile(admin, pki, slug=f"{tag}-self", key_algorithm=algorithm)
    self_signed = await _timed(admin, self_profile, f"{tag}-self.example.test",
                               attributes=server_key_attributes(f"{tag}-self.example.test"))
    return Hierarchy(algorithm, [x509.load_pem_x509_certificate(p.encode()) for p in pems], leaf, without_root,
                     without_subject, self_signed, body.body)


async def _make_all(stack: Stack) -> dict[str, Hierarchy]:
    async with aiohttp.ClientSession() as session:
        tenant = await open_tenant(stack, session, "issued-leaves")
        return {a: await _hierarchy(tenant.admin, tenant.project_id, a) for a in KEY_ALGORITHMS}


@pytest.fixture(scope="module")
def hierarchies(worker: Stack) -> dict[str, Hierarchy]:
    made: dict[str, Hierarchy] = run_sync(_make_all(worker))
    return made


@pytest.fixture(params=KEY_ALGORITHMS)
def h(request: pytest.FixtureRequest, hierarchies: dict[str, Hierarchy]) -> Hierarchy:
    return hierarchies[request.param]


def _intermediates(h: Hierarchy) -> str:
    """The intermediates as the CA endpoints give them (not the leaf's certificateChain, checked apart)."""
    return "".join(_pem(c) for c in reversed(h.cas[1:]))


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


# -- the real verifiers ----------------------------------------------------------------------------


async def test_issued_leaf_verifies_with_openssl_x509_strict_as_a_tls_server(h: Hierarchy, tmp_path: Path) -> None:
    for leaf in (h.leaf, h.leaf_without_subject):
        code, out = await openssl_verify(tmp_path / leaf.name, _pem(h.root), _intermediates(h),
                                         leaf.view["certificate"], purpose="sslserver")
        assert code == 0 and out.strip().endswith(": OK"), (leaf.name, out)


async def test_issued_leaf_verifies_with_cryptography_server_verifier_which_refuses_only_ed25519(
        h: Hierarchy) -> None:
    verifier = PolicyBuilder().store(Store([h.root])).time(datetime.now(UTC)).build_server_verifier(
        x509.DNSName(h.leaf.name))
    intermediates = list(reversed(h.cas[1:]))
    if h.algorithm == "ED25519":
        # cryptography's verifier implements the CA/Browser Forum Web PKI profile, whose algorithm
        # list has no Ed25519 (openssl verify and pkilint cover these chains).
        with pytest.raises(VerificationError, match="Forbidden public key algorithm"):
            verifier.verify(h.leaf.certificate, intermediates)
        return
    assert verifier.verify(h.leaf.certificate, intermediates) == [h.leaf.certificate, *reversed(h.cas)]


async def test_issued_leaf_passes_pkilint(h: Hierarchy) -> None:
    for leaf in (h.leaf, h.leaf_without_subject):
        assert await pkilint_errors(leaf.view["certificate"]) == [], (leaf.name, leaf.view["certificate"])


# -- the extensions a leaf must carry --------------------------------------------------------------


async def test_issued_leaf_is_v3_and_not_a_ca_in_critical_basic_constraints(h: Hierarchy) -> None:
    cert = h.leaf.certificate
    assert cert.version == x509.Version.v3
    constraints = _extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False and constraints.value.path_length is None


async def test_issued_leaf_key_usage_is_critical_and_its_extended_key_usage_names_server_auth(h: Hierarchy) -> None:
    cert = h.leaf.certificate
    usage = _extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert ExtendedKeyUsageOID.SERVER_AUTH in _extension(cert, x509.ExtendedKeyUsage).value


async def test_issued_leaf_authority_key_id_is_its_issuers_subject_key_id(h: Hierarchy) -> None:
    cert = h.leaf.certificate
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    ski = _extension(cert, x509.SubjectKeyIdentifier)
    assert not aki.critical and not ski.critical
    assert aki.value.key_identifier == _extension(h.issuing, x509.SubjectKeyIdentifier).value.digest
    assert ski.value.digest and ski.value.digest != aki.value.key_identifier
    assert cert.issuer == h.issuing.subject


async def test_subject_alternative_name_is_critical_exactly_when_the_subject_is_empty(h: Hierarchy) -> None:
    bare = h.leaf_without_subject.certificate
    assert len(bare.subject) == 0
    san = _extension(bare, x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == [h.leaf_without_subject.name]
    # RFC 5280 4.2.1.6: with a subject, the SAN SHOULD be non-critical.
    named = h.leaf.certificate
    assert len(named.subject) > 0 and not _extension(named, x509.SubjectAlternativeName).critical


# -- the validity window ---------------------------------------------------------------------------


async def test_issued_leaf_not_before_is_backdated_by_the_configured_margin(h: Hierarchy, stack: Stack) -> None:
    backdate = int(stack.env.get("KMS_BACKDATE_SECONDS", Settings.model_fields["backdate_seconds"].default))
    leaf = h.leaf
    not_before = leaf.certificate.not_valid_before_utc.timestamp()
    # The worker signed between asked_at and answered_at, at "now - backdate" in whole seconds.
    assert int(leaf.asked_at.timestamp()) - backdate - 1 <= not_before <= leaf.answered_at.timestamp() - backdate
    assert not_before <= leaf.answered_at.timestamp()


async def test_issued_leaf_not_after_is_not_past_its_issuers(h: Hierarchy) -> None:
    for leaf in (h.leaf, h.leaf_without_root, h.leaf_without_subject):
        assert leaf.certificate.not_valid_after_utc <= h.issuing.not_valid_after_utc, leaf.name
    for child, parent in zip(h.cas[1:], h.cas, strict=False):
        assert child.not_valid_after_utc <= parent.not_valid_after_utc


async def test_leaf_that_would_outlive_its_issuing_ca_is_refused_with_a_clear_message(
        worker: Stack, tenant: Tenant) -> None:
    cas = await _ca_chain(tenant.admin, tenant.project_id, "EC_prime256v1", "short", issuing_ttl="10d")
    policy = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": "short", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    profile = await _profile(tenant.admin, tenant.project_id, "short", cas[-1]["id"],
                             policy.body["certificatePolicy"]["id"],
                             "EC_prime256v1")

    r = await submit(tenant.admin, profile, attributes=server_key_attributes("long.example.test", ttl="30d"),
                     wait=10)

    if r.status in (200, 202):  # accepted for the worker, which must then refuse to sign it
        view = await view_of(tenant.admin, r)
        assert view["status"] == "failed" and view["certificate"] is None, view
        message = view["errorMessage"]
    else:
        assert 400 <= r.status < 500 and r.is_problem(), (r.status, r.body)
        message = r.body["detail"]
    assert "notAfter" in message and "issuing CA" in message, message


# -- the chain the service hands out ---------------------------------------------------------------


async def test_certificate_chain_runs_from_the_issuing_ca_up_to_the_root(h: Hierarchy) -> None:
    expected = list(reversed(h.cas))
    view = h.leaf.view
    assert x509.load_pem_x509_certificates(view["certificateChain"].encode()) == expected
    assert x509.load_pem_x509_certificate(view["issuingCaCertificate"].encode()) == h.issuing
    # The stored certificate answers the same chain later.
    assert x509.load_pem_x509_certificates(h.certificate_body["certificateChain"].encode()) == expected
    assert h.certificate_body["certificate"] == view["certificate"]


async def test_remove_roots_from_chain_drops_exactly_the_root(h: Hierarchy) -> None:
    view = h.leaf_without_root.view
    assert x509.load_pem_x509_certificates(view["certificateChain"].encode()) == list(reversed(h.cas[1:]))
    assert x509.load_pem_x509_certificate(view["issuingCaCertificate"].encode()) == h.issuing


# -- self-signed profiles --------------------------------------------------------------------------


async def test_self_signed_profile_certificate_passes_pkilint_and_verifies_against_itself(
        h: Hierarchy, tmp_path: Path) -> None:
    pem = h.self_signed.view["certificate"]
    cert = h.self_signed.certificate
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert await pkilint_errors(pem) == [], pem
    code, out = await openssl_verify(tmp_path, pem, "", pem, purpose="sslserver")
    assert code == 0 and out.strip().endswith(": OK"), out
