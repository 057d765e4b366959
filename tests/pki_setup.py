"""Test helper: a project's CA chain, a policy and a profile, made over the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.api_client import ApiClient

CA = "/api/v1/cert-manager/ca/internal"
POLICIES = "/api/v1/cert-manager/certificate-policies"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
ISSUE = "/api/v1/cert-manager/certificates"
REQUESTS = ISSUE + "/certificate-requests"

# Lets every name under example.test (and 127.0.0.1), both TLS EKUs, every key usage a leaf may need.
OPEN_POLICY: dict[str, Any] = {
    "subject": [{"type": "common_name", "allowed": ["*.example.test", "localhost"]},
                {"type": "organization", "allowed": ["*"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.test", "localhost"]},
             {"type": "ip_address", "allowed": ["127.0.0.1"]}],
    "keyUsages": {"allowed": ["digital_signature", "key_encipherment"]},
    "extendedKeyUsages": {"allowed": ["server_auth", "client_auth"]},
    "validity": {"max": "90d"},
}


@dataclass
class Pki:
    project_id: str
    root_id: str
    issuing_id: str
    policy_id: str
    profile_id: str
    root_pem: str
    issuing_pem: str


async def make_pki(admin: ApiClient, project_id: str, *, key_algorithm: str = "EC_prime256v1",
                   ca_key_algorithm: str = "EC_prime256v1", policy: dict[str, Any] | None = None,
                   slug: str = "web", issuer_type: str = "ca") -> Pki:
    """Root -> issuing CA -> policy -> profile (default key algorithm ``key_algorithm``, ttl 30d)."""
    root = await admin.post(CA, {"projectId": project_id, "name": f"{slug}-root", "status": "active",
                                 "configuration": {"type": "root", "commonName": f"{slug} Test Root",
                                                   "keyAlgorithm": ca_key_algorithm, "ttl": "5y"}})
    assert root.status == 201, root.body
    issuing = await admin.post(CA, {"projectId": project_id, "name": f"{slug}-issuing", "status": "active",
                                    "configuration": {"type": "intermediate", "parentCaId": root.body["id"],
                                                      "commonName": f"{slug} Test Issuing CA",
                                                      "keyAlgorithm": ca_key_algorithm, "ttl": "2y"}})
    assert issuing.status == 201, issuing.body
    pol = await admin.post(POLICIES, {"projectId": project_id, "name": f"{slug}-policy", **(policy or OPEN_POLICY)})
    assert pol.status == 201, pol.body
    policy_id = pol.body["certificatePolicy"]["id"]
    profile_body: dict[str, Any] = {
        "projectId": project_id, "slug": slug, "issuerType": issuer_type, "certificatePolicyId": policy_id,
        "enrollmentType": "api", "apiConfig": {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": key_algorithm, "extendedKeyUsages": ["server_auth"]},
    }
    if issuer_type == "ca":
        profile_body["caId"] = issuing.body["id"]
    prof = await admin.post(PROFILES, profile_body)
    assert prof.status == 201, prof.body
    root_pem = (await admin.get(f"{CA}/{root.body['id']}/certificate")).body["certificate"]
    issuing_pem = (await admin.get(f"{CA}/{issuing.body['id']}/certificate")).body["certificate"]
    return Pki(project_id, root.body["id"], issuing.body["id"], policy_id, prof.body["certificateProfile"]["id"],
               root_pem, issuing_pem)
