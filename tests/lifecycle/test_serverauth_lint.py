"""DESIGN.md 6 and 7: leaves that carry a CRL distribution point and AIA URLs (the session worker has
KMS_PUBLIC_URL set) lint clean under pkilint's RFC 5280 linter, and what the CA/Browser Forum TLS
linter (``lint_cabf_serverauth_cert``) says of them is exactly the list the README explains (section
"Linting"): a private CA fails some of the Baseline Requirements on purpose. A new finding fails here,
so it is looked at and documented (or fixed) rather than slipping in.

Findings are compared by (code, severity, where), ``where`` the node path with its indexes and the
``extensions.N.extnValue`` step left out: the set does not change when an extension is added ahead of
another, or when the AIA gains a second URL of the same kind of finding.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.api_client import Tenant
from tests.issuance.checkers import pkilint_errors, run
from tests.lifecycle.revoking import issue
from tests.pki_setup import make_pki
from tests.stack import Stack

LINT_CABF_SERVERAUTH_CERT = str(Path(sys.executable).with_name("lint_cabf_serverauth_cert"))
# A leaf with only DNS names asserts no organisation: judged as a domain-validated TLS certificate, the
# closest of the linter's types (-d cannot detect one: it reads the CA/B policy OID, which we never put).
CERTIFICATE_TYPE = "DV-FINAL-CERTIFICATE"

Finding = tuple[str, str, str]
# The README's "Linting" list, in its order.
EVERY_LEAF: set[Finding] = {
    ("cabf.serverauth.subscriber.certificate_policies_extension_absent", "ERROR", "extensions"),
    ("cabf.internal_domain_name", "ERROR", "subjectAltName.dNSName"),
    ("cabf.internal_domain_name", "ERROR",
     "cRLDistributionPoints.distributionPoint.fullName.uniformResourceIdentifier"),
    ("cabf.internal_domain_name", "ERROR", "authorityInfoAccessSyntax.accessLocation.uniformResourceIdentifier"),
    ("cabf.serverauth.dv.common_name_attribute_present", "WARNING", "subject.rdnSequence"),
    ("cabf.serverauth.subscriber.subject_key_identifier_extension_present", "WARNING", "extensions"),
    ("pkix.subject_key_identifier_method_1_identified", "INFO", "subjectKeyIdentifier"),
}
RSA_LEAF_ONLY: set[Finding] = {
    ("cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present", "WARNING", "keyUsage"),
}


def where(node_path: str) -> str:
    path = re.sub(r"^certificate\.tbsCertificate\.", "", node_path)
    path = re.sub(r"^extensions\.\d+\.extnValue\.", "", path)
    return ".".join(part for part in path.split(".") if not part.isdigit())


async def serverauth_findings(pem: str) -> set[Finding]:
    """Every finding of ``lint_cabf_serverauth_cert`` (all severities, as JSON, filtered here)."""
    _, out = await run(LINT_CABF_SERVERAUTH_CERT, "lint", "-t", CERTIFICATE_TYPE, "--format", "JSON",
                       "--severity", "ALL", "--document-format", "PEM", "-", stdin=pem.encode())
    try:
        results = json.loads(out)["results"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"lint_cabf_serverauth_cert did not lint the certificate: {out[:2000]}") from exc
    assert results, "lint_cabf_serverauth_cert ran no validator"
    return {(f["code"], f["severity"], where(r["node_path"])) for r in results for f in r["finding_descriptions"]}


@pytest.mark.parametrize(("key_algorithm", "expected"), [
    ("EC_prime256v1", EVERY_LEAF),
    ("RSA_2048", EVERY_LEAF | RSA_LEAF_ONLY),
])
async def test_a_leaf_with_crl_and_aia_urls_has_exactly_the_documented_serverauth_findings(
        worker: Stack, tenant: Tenant, key_algorithm: str, expected: set[Finding]) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id, key_algorithm=key_algorithm,
                         slug=f"lint-{key_algorithm.lower().replace('_', '-')}")
    view = await issue(tenant.admin, pki, "lint.example.test")
    pem = str(view["certificate"])
    leaf = x509.load_pem_x509_certificate(pem.encode())
    leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)

    found = await serverauth_findings(pem)

    assert found == expected, {"new": sorted(found - expected), "gone": sorted(expected - found)}
    assert await pkilint_errors(pem) == []
