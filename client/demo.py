"""The demo PKI of ``kms-pki dev``, made through the public API as a user would make it:
a root CA, an intermediate under it, a policy for ``*.demo.internal`` names and a profile ``demo-web``."""

from __future__ import annotations

from typing import Any

from client.sdk import KmsClient

CA = "/api/v1/cert-manager/ca/internal"
POLICIES = "/api/v1/cert-manager/certificate-policies"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
DEMO_SLUG = "demo-web"


async def _ca(kms: KmsClient, project_id: str, existing: dict[str, Any], name: str,
              **configuration: Any) -> dict[str, Any]:
    if name in existing:
        return dict(existing[name])
    _, ca, _ = await kms.call("POST", CA, {"projectId": project_id, "name": name, "status": "active",
                                           "configuration": configuration})
    if ca["status"] != "active":
        raise RuntimeError(f"demo CA {name} is {ca['status']}: {ca.get('errorMessage')}")
    return dict(ca)


async def ensure_demo_pki(kms: KmsClient, project_id: str) -> dict[str, Any]:
    """Idempotent: reuses what a previous run made. Returns the demo profile."""
    _, cas, _ = await kms.call("GET", CA, params={"projectId": project_id})  # a bare array, as upstream
    existing = {c["name"]: c for c in cas if c["status"] == "active"}
    root = await _ca(kms, project_id, existing, "demo-root", type="root", commonName="Demo Root CA",
                     organization="Hanzo KMS Demo", keyAlgorithm="EC_secp384r1", ttl="10y", maxPathLength=1)
    issuing = await _ca(kms, project_id, existing, "demo-issuing", type="intermediate",
                        parentCaId=root["id"], commonName="Demo Issuing CA", organization="Hanzo KMS Demo",
                        keyAlgorithm="EC_prime256v1", ttl="5y")
    _, profiles, _ = await kms.call("GET", PROFILES, params={"projectId": project_id})
    for profile in profiles["certificateProfiles"]:
        if profile["slug"] == DEMO_SLUG:
            return dict(profile)
    _, created_policy, _ = await kms.call("POST", POLICIES, {
        "projectId": project_id, "name": "demo-web",
        "description": "TLS server and client certificates for *.demo.internal",
        "subject": [{"type": "common_name", "allowed": ["*.demo.internal"]},
                    {"type": "organization", "allowed": ["*"]}],
        "sans": [{"type": "dns_name", "allowed": ["*.demo.internal"]},
                 {"type": "ip_address", "allowed": ["127.0.0.1", "10.*"]}],
        "keyUsages": {"allowed": ["digital_signature", "key_encipherment"]},
        "extendedKeyUsages": {"allowed": ["server_auth", "client_auth"]},
        "validity": {"max": "90d"},
    })
    policy = created_policy["certificatePolicy"]
    _, created_profile, _ = await kms.call("POST", PROFILES, {
        "projectId": project_id, "slug": DEMO_SLUG, "description": "demo TLS profile",
        "issuerType": "ca", "caId": issuing["id"], "certificatePolicyId": policy["id"],
        "enrollmentType": "api", "apiConfig": {"autoRenew": False},
        "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1", "extendedKeyUsages": ["server_auth"]},
    })
    return dict(created_profile["certificateProfile"])
