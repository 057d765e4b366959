"""The KMS agent (``infisical cert-manager agent``) replayed call by call against the running service.

Replayed from the agent's own source, Infisical/cli at 242df555bcbef217c288ca7df5e7ce5389830d82:
- ``packages/cmd/agent.go``: ``resolveCertificateLegacyReferences`` (v1),
  ``resolveCertificateApplicationReferences`` (v2), ``buildCertificateAttributes``,
  ``IssueCertificate`` + ``PollCertificateRequest`` / ``checkCertificateRequestStatus``,
  ``CheckCertificateStatus`` + ``RenewCertificate`` + ``PollCertificateRequestForRenewal``,
  ``FetchCertificate`` (``certificate-id`` mode), ``RefreshAccessToken`` (token renew);
- ``packages/api/api.go``: the URL, method and body of every ``Call...`` function;
- ``packages/api/model.go``: the structs every answer is decoded into (copied below);
- ``packages/api/errors.go``: ``errorResponse {message, details, reqId, error}``, parsed from any 4xx
  but a 422 (whose body it prints whole).
Login goes through the Go SDK the agent embeds, Infisical/go-sdk at 88895e1:
``packages/api/auth/universal_auth_login.go`` (``POST /api/v1/auth/universal-auth/login``, JSON
``{clientId, clientSecret}``; ``organizationSlug`` is omitted when empty) into
``MachineIdentityAuthLoginResponse {accessToken, expiresIn int64, accessTokenMaxTTL int64, tokenType}``.
The agent refuses to run on a token whose ``expiresIn`` is 30 s or less.

The agent's ``version: v1`` config replayed here::

    version: v1
    certificates:
      - project-slug: <projectSlug printed by kms-pki admin bootstrap>
        profile-name: compat-web
        attributes:
          common-name: v1-<hex>.compat.example.test
          alt-names: [v1-<hex>.compat.example.test]
          key-algorithm: EC_prime256v1
          signature-algorithm: ECDSA-SHA256
          key-usages: [digital_signature, key_encipherment]
          extended-key-usages: [server_auth]
          ttl: 30d
        file-output: {chain: {omit-root: true}}   # the default: removeRootsFromChain true

and it sends, in this order (every call but login and token renew with ``Authorization: Bearer``,
``User-Agent: cli``):
1. ``POST /api/v1/auth/universal-auth/login {"clientId", "clientSecret"}``;
2. ``GET /api/v1/projects/slug/{slug}`` -> reads ``id``;
3. ``GET /api/v1/cert-manager/certificate-profiles/slug/{profile}?projectId={id}`` -> ``certificateProfile.id``;
4. ``POST /api/v1/cert-manager/certificates`` (no ``?wait``)::

       {"profileId": "...",
        "attributes": {"ttl": "30d", "signatureAlgorithm": "ECDSA-SHA256", "keyAlgorithm": "EC_prime256v1",
                       "commonName": "...", "keyUsages": [...], "extendedKeyUsages": ["server_auth"],
                       "altNames": [{"type": "dns_name", "value": "..."}], "removeRootsFromChain": true}}

   -> ``certificate`` (an object: done; null: poll) and ``certificateRequestId``;
5. ``GET .../certificates/certificate-requests/{id}`` until ``status`` is ``issued`` with ``certificate``,
   ``serialNumber`` and ``certificateId`` all set (``failed`` reads ``errorMessage``; it knows no other);
6. at renewal time ``GET .../certificates/{certificateId}`` -> ``certificate.status`` (``active``,
   ``revoked``, ``expired``) and ``certificate.notAfter``;
7. ``POST .../certificates/{certificateId}/renew {"removeRootsFromChain": true}`` -> a non-empty
   ``certificateRequestId`` is polled as in 5, else the flat answer is the new certificate;
8. ``POST /api/v1/auth/token/renew {"accessToken"}``, with no Authorization header, before expiry.
``version: v2`` replaces 2-3 with ``GET .../applications/by-name/{name}`` -> ``application.id`` and
``GET .../applications/{id}/profiles`` -> the ``profiles[]`` entry whose ``profileSlug`` is the
profile name, its ``profileId``; and 4 also sends ``"applicationId"``. ``certificate-id`` mode sends
only 1, then ``GET .../certificates/{id}`` (``status`` must be ``active``) and ``GET .../{id}/bundle``.

The real agent polls every 10 s and more; the replay polls every 0.1 s, so it sees every status a
request passes through.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.api_client import ApiClient
from tests.compat.project import CERTIFICATES, DOMAIN, PROFILES, REQUESTS, CompatPki, Project
from tests.compat.wire import (
    UPSTREAM_REQUEST_STATUSES,
    GoType,
    Slice,
    assert_go_decodes,
    fingerprints,
)

# -- the structs the agent decodes into (packages/api/model.go; go-sdk packages/api/auth/models.go) --

LOGIN: GoType = {"accessToken": "string", "expiresIn": "int", "accessTokenMaxTTL": "int", "tokenType": "string"}
TOKEN_RENEW: GoType = {"accessToken": "string", "expiresIn": "int", "tokenType": "string",
                       "accessTokenMaxTTL": "int"}
PROJECT: GoType = {"id": "string", "name": "string", "slug": "string"}
PROFILE: GoType = {"certificateProfile": {"id": "string", "slug": "string", "projectId": "string",
                                          "description": "string"}}
APPLICATION: GoType = {"application": {"id": "string", "name": "string"}}
APPLICATION_PROFILES: GoType = {"profiles": Slice({"applicationId": "string", "profileId": "string",
                                                   "profileSlug": "string"})}
CERTIFICATE_DATA: GoType = {"certificate": "string", "issuingCaCertificate": "string", "certificateChain": "string",
                            "privateKey": "string", "serialNumber": "string", "certificateId": "string"}
ISSUE: GoType = {"certificate": CERTIFICATE_DATA, "certificateRequestId": "string"}
REQUEST: GoType = {"status": "string", "createdAt": "time", "updatedAt": "time", "commonName": "string",
                   "profileId": "string", "certificate": "string", "issuingCaCertificate": "string",
                   "certificateChain": "string", "privateKey": "string", "serialNumber": "string",
                   "certificateId": "string", "errorMessage": "string"}
RETRIEVE: GoType = {"certificate": {"id": "string", "createdAt": "time", "updatedAt": "time", "status": "string",
                                    "serialNumber": "string", "commonName": "string", "notBefore": "time",
                                    "notAfter": "time", "caId": "string", "keyUsages": "[]string",
                                    "extendedKeyUsages": "[]string", "certificate": "string",
                                    "certificateChain": "string", "privateKey": "string"}}
BUNDLE: GoType = {"certificate": "string", "certificateChain": "string", "privateKey": "string",
                  "serialNumber": "string"}
RENEW: GoType = {"certificate": "string", "issuingCaCertificate": "string", "certificateChain": "string",
                 "privateKey": "string", "serialNumber": "string", "certificateId": "string",
                 "certificateRequestId": "string"}
ERROR: GoType = {"message": "string", "details": "any", "reqId": "string", "error": "string"}

AGENT_HEADERS = {"User-Agent": "cli"}  # packages/api/api.go USER_AGENT
TOKEN_RENEW_PATH = "/api/v1/auth/token/renew"
LOGIN_PATH = "/api/v1/auth/universal-auth/login"
POLL_INTERVAL = 0.1
POLL_DEADLINE = 60.0


@dataclass(frozen=True)
class Delivered:
    """What the agent writes to disk once a certificate is issued, and the statuses it polled through."""

    certificate_id: str
    serial_number: str
    certificate: str
    certificate_chain: str
    private_key: str
    statuses: tuple[str, ...]


def agent_attributes(common_name: str, *, omit_root: bool = True, ttl: str = "30d") -> dict[str, Any]:
    """``buildCertificateAttributes`` for the v1/v2 configs above: Go's field order, ``omitempty`` applied
    (so ``removeRootsFromChain: false`` is not sent at all), every alt name a ``dns_name``."""
    attributes: dict[str, Any] = {
        "ttl": ttl, "signatureAlgorithm": "ECDSA-SHA256", "keyAlgorithm": "EC_prime256v1", "commonName": common_name,
        "keyUsages": ["digital_signature", "key_encipherment"], "extendedKeyUsages": ["server_auth"],
        "altNames": [{"type": "dns_name", "value": common_name}],
    }
    if omit_root:
        attributes["removeRootsFromChain"] = True
    return attributes


def fresh_name(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}.{DOMAIN}"


class KmsAgent:
    """The agent's HTTP calls, each as packages/api/api.go makes it, each answer decoded as model.go does."""

    def __init__(self, http: ApiClient) -> None:
        self.anonymous = http.with_token(None)
        self.token: str | None = None
        self.login_answer: dict[str, Any] = {}

    async def call(self, method: str, path: str, shape: GoType, body: Any = None,
                   params: dict[str, str] | None = None, *, authenticated: bool = True) -> Any:
        client = self.anonymous.with_token(self.token) if authenticated else self.anonymous
        r = await client.request(method, path, json_body=body, params=params, headers=AGENT_HEADERS)
        assert r.status < 400, (method, path, r.status, r.body)  # resty's IsError()
        assert_go_decodes(r.body, shape)
        return r.body

    async def login(self, project: Project) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("POST", LOGIN_PATH, LOGIN, {
            "clientId": project.client_id, "clientSecret": project.client_secret}, authenticated=False)
        self.token = answer["accessToken"]
        self.login_answer = answer
        return answer

    async def renew_token(self) -> dict[str, Any]:
        """``RefreshAccessToken``: a fresh resty client, so the token travels in the body only."""
        answer: dict[str, Any] = await self.call("POST", TOKEN_RENEW_PATH, TOKEN_RENEW,
                                                 {"accessToken": self.token}, authenticated=False)
        self.token = answer["accessToken"]
        return answer

    async def resolve_v1(self, project_slug: str, profile_slug: str) -> str:
        """``resolveCertificateLegacyReferences``: the profile id for a project slug and a profile name."""
        project = await self.call("GET", f"/api/v1/projects/slug/{quote(project_slug)}", PROJECT)
        assert project.get("id"), ("project returned an empty ID", project)
        profile = await self.call("GET", f"{PROFILES}/slug/{quote(profile_slug)}", PROFILE,
                                  params={"projectId": project["id"]})
        profile_id: str = profile["certificateProfile"]["id"]
        assert profile_id, profile
        return profile_id

    async def resolve_v2(self, application_name: str, profile_slug: str) -> tuple[str, str]:
        """``resolveCertificateApplicationReferences``: (application id, profile id)."""
        application = await self.call("GET", f"/api/v1/cert-manager/applications/by-name/{quote(application_name)}",
                                      APPLICATION)
        application_id: str = application["application"]["id"]
        assert application_id, ("application returned an empty ID", application)
        listed = await self.call("GET", f"/api/v1/cert-manager/applications/{quote(application_id)}/profiles",
                                 APPLICATION_PROFILES)
        matched = [p for p in listed["profiles"] or [] if p["profileSlug"] == profile_slug]
        assert matched, (f"profile {profile_slug!r} is not attached to application {application_name!r}", listed)
        return application_id, matched[0]["profileId"]

    async def issue(self, profile_id: str, attributes: dict[str, Any], application_id: str = "") -> dict[str, Any]:
        """``CallIssueCertificate``: ``applicationId`` and ``csr`` are ``omitempty``."""
        body: dict[str, Any] = {"profileId": profile_id}
        if application_id:
            body["applicationId"] = application_id
        body["attributes"] = attributes
        answer: dict[str, Any] = await self.call("POST", CERTIFICATES, ISSUE, body)
        return answer

    async def poll(self, request_id: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``checkCertificateRequestStatus`` until it would mark the certificate active: ``issued`` with
        ``certificate``, ``serialNumber`` and ``certificateId`` all set (``issued`` without them: poll on)."""
        seen: list[str] = []
        deadline = asyncio.get_running_loop().time() + POLL_DEADLINE
        while True:
            answer: dict[str, Any] = await self.call("GET", f"{REQUESTS}/{request_id}", REQUEST)
            status = answer.get("status")
            assert status in UPSTREAM_REQUEST_STATUSES, ("a status outside upstream's enum", answer)
            seen.append(status)
            assert status != "failed", ("the request failed", answer.get("errorMessage"))
            if status == "issued" and all(answer.get(k) for k in ("certificate", "serialNumber", "certificateId")):
                return answer, tuple(seen)
            assert asyncio.get_running_loop().time() < deadline, ("never issued", seen, answer)
            await asyncio.sleep(POLL_INTERVAL)

    async def obtain(self, profile_id: str, attributes: dict[str, Any], application_id: str = "") -> Delivered:
        """``IssueCertificate``, then ``PollCertificateRequest`` when the answer has no certificate yet."""
        answer = await self.issue(profile_id, attributes, application_id)
        if answer.get("certificate") is not None:
            c = answer["certificate"]
            return Delivered(c["certificateId"], c["serialNumber"], c["certificate"], c.get("certificateChain") or "",
                             c.get("privateKey") or "", ())
        assert answer.get("certificateRequestId"), ("neither a certificate nor a request to poll", answer)
        polled, seen = await self.poll(answer["certificateRequestId"])
        return _delivered(polled, seen)

    async def retrieve(self, certificate_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("GET", f"{CERTIFICATES}/{quote(certificate_id)}", RETRIEVE)
        metadata: dict[str, Any] = answer["certificate"]
        return metadata

    async def bundle(self, certificate_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("GET", f"{CERTIFICATES}/{quote(certificate_id)}/bundle", BUNDLE)
        return answer

    async def renew(self, certificate_id: str, *, omit_root: bool = True) -> Delivered:
        """``RenewCertificate``: a non-empty ``certificateRequestId`` is polled
        (``PollCertificateRequestForRenewal``), else the flat answer is the new certificate."""
        body = {"removeRootsFromChain": True} if omit_root else {}
        answer: dict[str, Any] = await self.call("POST", f"{CERTIFICATES}/{quote(certificate_id)}/renew", RENEW, body)
        if answer.get("certificateRequestId"):
            polled, seen = await self.poll(answer["certificateRequestId"])
            return _delivered(polled, seen)
        return _delivered(answer, ())


def _delivered(answer: dict[str, Any], seen: tuple[str, ...]) -> Delivered:
    assert answer.get("certificate") and answer.get("certificateId") and answer.get("serialNumber"), answer
    return Delivered(answer["certificateId"], answer["serialNumber"], answer["certificate"],
                     answer.get("certificateChain") or "", answer.get("privateKey") or "", seen)


def _leaf(delivered: Delivered) -> x509.Certificate:
    return x509.load_pem_x509_certificate(delivered.certificate.encode())


def _key_matches(private_key_pem: str, certificate_pem: str) -> bool:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(serialization.Encoding.DER, spki)
                == cert.public_key().public_bytes(serialization.Encoding.DER, spki))


def _moment(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


async def _agent(http: ApiClient, project: Project) -> KmsAgent:
    agent = KmsAgent(http)
    await agent.login(project)
    return agent


def _slug(pki: CompatPki) -> str:
    assert pki.project.slug, "kms-pki admin bootstrap --json printed no projectSlug (DESIGN.md 11)"
    return pki.project.slug


# -- auth ----------------------------------------------------------------------------------------------


async def test_agent_login_answers_every_field_the_go_sdk_decodes_with_a_ttl_the_agent_runs_on(
        http: ApiClient, compat_project: Project) -> None:
    answer = await KmsAgent(http).login(compat_project)
    assert answer["accessToken"] and answer["tokenType"] == "Bearer", answer
    assert isinstance(answer["expiresIn"], int) and answer["expiresIn"] > 30, answer
    assert isinstance(answer["accessTokenMaxTTL"], int) and answer["accessTokenMaxTTL"] >= answer["expiresIn"], answer


async def test_agent_token_renew_with_the_token_in_the_body_only_answers_a_working_token_within_max_ttl(
        http: ApiClient, compat_project: Project) -> None:
    agent = await _agent(http, compat_project)
    renewed = await agent.renew_token()
    assert renewed["accessToken"] and renewed["tokenType"] == "Bearer", renewed
    assert 30 < renewed["expiresIn"] <= agent.login_answer["accessTokenMaxTTL"], (renewed, agent.login_answer)
    # The renewed token is the one the agent now sends everywhere.
    await agent.call("GET", PROFILES, "any", params={"projectId": compat_project.id})


# -- version: v1 (project slug + profile name) ---------------------------------------------------------


async def test_agent_v1_resolves_the_project_slug_then_the_profile_slug_with_its_project_id(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    project = await agent.call("GET", f"/api/v1/projects/slug/{quote(_slug(compat_pki))}", PROJECT)
    assert (project["id"], project["name"], project["slug"]) == (
        compat_pki.project.id, compat_pki.project.name, compat_pki.project.slug), project
    assert await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug) == compat_pki.profile_id


async def test_agent_v1_issue_body_with_remove_roots_and_no_wait_is_accepted_with_a_request_to_poll(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    answer = await agent.issue(profile_id, agent_attributes(fresh_name("v1")))
    assert answer["certificate"] is None or answer["certificate"]["certificateId"], answer
    assert isinstance(answer["certificateRequestId"], str) and answer["certificateRequestId"], answer


async def test_agent_v1_poll_sees_only_statuses_it_knows_until_issued_with_certificate_key_serial_and_id(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    name = fresh_name("v1")
    delivered = await agent.obtain(profile_id, agent_attributes(name))
    assert set(delivered.statuses) <= {"pending", "issued"}, delivered.statuses
    leaf = _leaf(delivered)
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
    assert int(delivered.serial_number.replace(":", ""), 16) == leaf.serial_number, delivered.serial_number
    # No CSR in the agent's body: the server made the key, and the agent writes it beside the certificate.
    assert _key_matches(delivered.private_key, delivered.certificate)


async def test_agent_v1_chain_it_writes_omits_the_root_it_asked_to_remove(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    delivered = await agent.obtain(profile_id, agent_attributes(fresh_name("v1")))
    chain = fingerprints(delivered.certificate_chain)
    assert fingerprints(compat_pki.issuing_pem)[0] in chain, delivered.certificate_chain
    assert fingerprints(compat_pki.root_pem)[0] not in chain, delivered.certificate_chain


async def test_agent_v1_with_omit_root_false_sends_no_remove_roots_and_gets_the_root_in_its_chain(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    delivered = await agent.obtain(profile_id, agent_attributes(fresh_name("v1"), omit_root=False))
    assert fingerprints(delivered.certificate_chain) == [*fingerprints(compat_pki.issuing_pem),
                                                          *fingerprints(compat_pki.root_pem)]


async def test_agent_v1_metadata_at_renewal_time_is_active_with_the_leafs_not_after(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    name = fresh_name("v1")
    delivered = await agent.obtain(profile_id, agent_attributes(name))
    metadata = await agent.retrieve(delivered.certificate_id)
    assert metadata["status"] == "active", metadata
    assert metadata["id"] == delivered.certificate_id, metadata
    assert metadata["serialNumber"] == delivered.serial_number and metadata["commonName"] == name, metadata
    assert _moment(metadata["notAfter"]) == _leaf(delivered).not_valid_after_utc, metadata


async def test_agent_v1_renew_with_remove_roots_is_polled_to_a_new_certificate_and_the_old_stays_active(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    name = fresh_name("v1")
    old = await agent.obtain(profile_id, agent_attributes(name))
    new = await agent.renew(old.certificate_id)
    assert set(new.statuses) <= {"pending", "issued"}, new.statuses
    assert new.certificate_id != old.certificate_id and new.serial_number != old.serial_number
    assert _leaf(new).subject == _leaf(old).subject and _key_matches(new.private_key, new.certificate)
    assert not _key_matches(old.private_key, new.certificate), "a renewal makes a new key"
    assert fingerprints(compat_pki.root_pem)[0] not in fingerprints(new.certificate_chain)
    assert (await agent.retrieve(old.certificate_id))["status"] == "active"
    assert (await agent.retrieve(new.certificate_id))["status"] == "active"


async def test_agent_v1_replays_login_resolve_issue_poll_metadata_renew_bundle_and_token_renew_in_order(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = KmsAgent(http)
    await agent.login(compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    name = fresh_name("v1")
    issued = await agent.obtain(profile_id, agent_attributes(name))
    metadata = await agent.retrieve(issued.certificate_id)
    assert metadata["status"] == "active" and _moment(metadata["notAfter"]) > datetime.now(UTC), metadata
    renewed = await agent.renew(issued.certificate_id)
    assert (await agent.retrieve(renewed.certificate_id))["status"] == "active"
    bundle = await agent.bundle(renewed.certificate_id)
    assert fingerprints(bundle["certificate"]) == fingerprints(renewed.certificate), bundle
    assert bundle["serialNumber"] == renewed.serial_number and _key_matches(bundle["privateKey"],
                                                                            bundle["certificate"]), bundle
    await agent.renew_token()
    assert (await agent.retrieve(renewed.certificate_id))["status"] == "active"


# -- version: v2 (application + profile name) ----------------------------------------------------------


async def test_agent_v2_resolves_the_application_by_name_and_its_profile_by_slug(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    application = await agent.call(
        "GET", f"/api/v1/cert-manager/applications/by-name/{quote(compat_pki.application_name)}", APPLICATION)
    assert application["application"]["name"] == compat_pki.application_name, application
    assert await agent.resolve_v2(compat_pki.application_name, compat_pki.profile_slug) == (
        compat_pki.application_id, compat_pki.profile_id)


async def test_agent_v2_replays_issue_with_application_id_poll_metadata_renew_and_bundle_in_order(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = KmsAgent(http)
    await agent.login(compat_pki.project)
    application_id, profile_id = await agent.resolve_v2(compat_pki.application_name, compat_pki.profile_slug)
    issued = await agent.obtain(profile_id, agent_attributes(fresh_name("v2")), application_id)
    assert set(issued.statuses) <= {"pending", "issued"}, issued.statuses
    metadata = await agent.retrieve(issued.certificate_id)
    assert metadata["status"] == "active" and _moment(metadata["notAfter"]) == _leaf(issued).not_valid_after_utc
    renewed = await agent.renew(issued.certificate_id)
    assert renewed.certificate_id != issued.certificate_id
    assert (await agent.retrieve(renewed.certificate_id))["status"] == "active"
    bundle = await agent.bundle(renewed.certificate_id)
    assert fingerprints(bundle["certificate"]) == fingerprints(renewed.certificate), bundle
    assert _key_matches(bundle["privateKey"], bundle["certificate"]), bundle


# -- certificate-id mode -------------------------------------------------------------------------------


async def test_agent_certificate_id_mode_reads_active_metadata_then_the_bundle_with_its_key(
        http: ApiClient, compat_pki: CompatPki) -> None:
    # Someone issued a certificate earlier; the agent's config names only its id.
    earlier = await _agent(http, compat_pki.project)
    existing = await earlier.obtain(compat_pki.profile_id, agent_attributes(fresh_name("byid")))
    agent = await _agent(http, compat_pki.project)
    metadata = await agent.retrieve(existing.certificate_id)
    assert metadata["status"] == "active" and metadata["id"] == existing.certificate_id, metadata
    bundle = await agent.bundle(existing.certificate_id)
    assert bundle["certificate"], bundle
    assert (bundle["serialNumber"] or metadata["serialNumber"]) == existing.serial_number, bundle
    assert fingerprints(bundle["certificate"]) == fingerprints(existing.certificate), bundle
    assert _key_matches(bundle["privateKey"], bundle["certificate"]), bundle
    assert fingerprints(compat_pki.issuing_pem)[0] in fingerprints(bundle["certificateChain"]), bundle


# -- errors the agent logs -----------------------------------------------------------------------------


async def _error(agent: KmsAgent, method: str, path: str, body: Any = None,
                 params: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    r = await agent.anonymous.with_token(agent.token).request(method, path, json_body=body, params=params,
                                                              headers=AGENT_HEADERS)
    assert 400 <= r.status < 500, (r.status, r.body)
    assert isinstance(r.body, dict), r.body
    assert_go_decodes(r.body, ERROR)
    return r.status, r.body, r.headers


async def test_agent_error_body_of_an_unknown_project_slug_is_a_404_with_message_req_id_and_error(
        http: ApiClient, compat_project: Project) -> None:
    agent = await _agent(http, compat_project)
    status, body, headers = await _error(agent, "GET", "/api/v1/projects/slug/no-such-project-anywhere")
    assert status == 404, body
    assert body["message"] and body["error"] and body["reqId"] == headers["X-Request-Id"], body


async def test_agent_error_body_of_an_issue_outside_the_policy_is_a_400_whose_message_names_the_reason(
        http: ApiClient, compat_pki: CompatPki) -> None:
    agent = await _agent(http, compat_pki.project)
    profile_id = await agent.resolve_v1(_slug(compat_pki), compat_pki.profile_slug)
    attributes = agent_attributes("outside.example.org")
    status, body, headers = await _error(agent, "POST", CERTIFICATES,
                                         {"profileId": profile_id, "attributes": attributes})
    assert status == 400, body
    assert "outside.example.org" in body["message"] and body["error"] and body["reqId"] == headers["X-Request-Id"]
