"""The cert-manager issuer for Kubernetes (the newer, application-based one) replayed against the service.

Replayed from Infisical/infisical-issuer ``internal/issuer/signer/signer.go``, the version that resolves
an application and a profile and knows the ``pending_validation`` status (the one tested by
``internal/issuer/signer/signer_test.go`` at 605926e; the repository's 2024 tag v0.1.3 still signs by
certificate template), and ``internal/auth/universal.go`` at 287c0cc, which logs in through the Go SDK
(``POST /api/v1/auth/universal-auth/login {"clientId", "clientSecret"}``, as the agent does).

Every call sends ``Authorization: Bearer`` and ``Content-Type: application/json``, GETs included:
1. ``GET /api/v1/cert-manager/applications/by-name/{application}`` -> ``application.id`` (empty: error);
2. ``GET /api/v1/cert-manager/certificate-profiles/slug/{profile}``, with no ``projectId`` ->
   ``certificateProfile.id`` (1 and 2 are also its health check, and run again on every issue);
3. ``POST /api/v1/cert-manager/certificates``::

       {"profileId": "...", "applicationId": "...", "csr": "<the CertificateRequest's PEM>",
        "attributes": {"ttl": "<whole hours of spec.duration, at least 1>h"}}

   -> ``certificate{certificate, certificateChain}`` (an object: done), else ``status`` (``failed`` or
   ``rejected``: final, with ``message``) and ``certificateRequestId`` (empty: error);
4. on each reconcile, ``GET /api/v1/cert-manager/certificates/certificate-requests/{id}`` -> ``status``:
   ``pending | pending_approval | pending_validation`` requeue (``pendingMessage``), ``issued`` needs
   ``certificateId``, ``failed | rejected`` are final (``errorMessage``), and **any other status is a
   final failure**;
5. ``GET /api/v1/cert-manager/certificates/{certificateId}/bundle`` -> ``certificate`` and
   ``certificateChain``: the Secret's ``tls.crt`` is the leaf plus every chain block but the last, and
   ``ca.crt`` is the chain's last block (taken as the root).
Responses: 401 (token dropped), 408, 429 and 5xx are retried; every other 4xx is final.

The older issuer (the repository's tag v0.1.3, af1cecd, same file) still runs in clusters: its health
check is ``GET /api/status`` (any 200), and it logs in form-encoded (``Content-Type:
application/x-www-form-urlencoded``, ``clientId=...&clientSecret=...``) into ``AuthResponse
{accessToken, expiresIn int, accessTokenMaxTTL int, tokenType}``. Its signing route
(``/api/v1/pki/certificates/sign-certificate``) is not part of this contract; those two calls are.

cert-manager makes the CSR (``pki.GenerateCSR``): the Certificate's common name and DNS names, and a
critical key usage extension for its usages (default: digital signature, plus key encipherment for
RSA keys). Its default key is RSA 2048 and its default duration 2160h.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.api_client import ApiClient, Reply, login
from tests.compat.project import CERTIFICATES, DOMAIN, PROFILES, REQUESTS, CompatPki, Project
from tests.compat.wire import UPSTREAM_REQUEST_STATUSES, GoType, assert_go_decodes, fingerprints

# -- the structs the issuer decodes into (signer.go) ---------------------------------------------------

APPLICATION: GoType = {"application": {"id": "string"}}
PROFILE: GoType = {"certificateProfile": {"id": "string"}}
CREATE: GoType = {"certificate": {"certificate": "string", "certificateChain": "string"},
                  "certificateRequestId": "string", "status": "string", "message": "string"}
POLL: GoType = {"status": "string", "certificateId": "string", "errorMessage": "string",
                "pendingMessage": "string"}
BUNDLE: GoType = {"certificate": "string", "certificateChain": "string"}

OLD_ISSUER_LOGIN: GoType = {"accessToken": "string", "expiresIn": "int", "accessTokenMaxTTL": "int",
                            "tokenType": "string"}

# The statuses signer.go requeues on, and the ones it ends on; any other ends the CertificateRequest.
REQUEUE = frozenset({"pending", "pending_approval", "pending_validation"})
FINAL = frozenset({"failed", "rejected"})
ISSUER_HEADERS = {"Content-Type": "application/json"}
RECONCILE_INTERVAL = 0.05
SIGN_DEADLINE = 120.0


class Terminal(Exception):
    """signer.go's ``terminalError``: the CertificateRequest fails for good, never retried."""


@dataclass
class SignResult:
    """What signer.go hands cert-manager: ``tls.crt`` (leaf + intermediates) and ``ca.crt``."""

    certificate: str = ""
    ca: str = ""
    statuses: list[str] = field(default_factory=list)


def cert_manager_csr(name: str, *, key_algorithm: str = "RSA_2048") -> tuple[str, Any]:
    """A CSR as cert-manager's pki.GenerateCSR makes it for a Certificate with commonName and dnsNames."""
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if key_algorithm == "RSA_2048"
                else ec.generate_private_key(ec.SECP256R1()))
    usage = x509.KeyUsage(digital_signature=True, key_encipherment=key_algorithm == "RSA_2048",
                          content_commitment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .add_extension(usage, critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def assemble(leaf: str, chain: str) -> SignResult:
    """signer.go ``assemble``: the leaf plus all chain blocks but the last; the last is the CA."""
    if not leaf:
        raise Terminal("issued certificate from Infisical was empty")
    blocks = [f"-----BEGIN CERTIFICATE-----{b}" for b in chain.split("-----BEGIN CERTIFICATE-----")[1:]]
    if not blocks:
        return SignResult(certificate=leaf.rstrip("\n") + "\n")
    return SignResult(certificate=leaf.rstrip("\n") + "\n" + "".join(blocks[:-1]), ca=blocks[-1])


class CertManagerIssuer:
    """signer.go's calls for one Issuer (``spec.application``, ``spec.profile``) and one logged-in client."""

    def __init__(self, http: ApiClient, application: str, profile: str) -> None:
        self.http = http
        self.application = application
        self.profile = profile

    async def call(self, method: str, path: str, shape: GoType, body: Any = None) -> Any:
        """One request, as ``checkResponse`` classifies it: transient answers (429, 408) are retried here
        after their Retry-After; other 4xx are Terminal; a 5xx is a bug of the service under test."""
        while True:
            r: Reply = await self.http.request(method, path, json_body=body, headers=ISSUER_HEADERS)
            if r.status in (408, 429):
                await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
                continue
            assert r.status < 500, (method, path, r.status, r.body)
            if r.status >= 400:
                raise Terminal(f"{method} {path}: {r.status} {r.body}")
            assert_go_decodes(r.body, shape)
            return r.body

    async def resolve_application_id(self) -> str:
        out = await self.call("GET", f"/api/v1/cert-manager/applications/by-name/{quote(self.application)}",
                              APPLICATION)
        application_id: str = (out.get("application") or {}).get("id") or ""
        assert application_id, (f"application {self.application!r} not found", out)
        return application_id

    async def resolve_profile_id(self) -> str:
        out = await self.call("GET", f"{PROFILES}/slug/{quote(self.profile)}", PROFILE)
        profile_id: str = (out.get("certificateProfile") or {}).get("id") or ""
        assert profile_id, (f"profile {self.profile!r} not found", out)
        return profile_id

    async def check(self) -> None:
        """``Check``: the Issuer is Ready when both names resolve."""
        await self.resolve_application_id()
        await self.resolve_profile_id()

    async def issue(self, csr: str, duration: timedelta | None, result: SignResult) -> str | None:
        """``issue``: the request id to poll, or None when ``result`` was filled at once."""
        body: dict[str, Any] = {"profileId": await self.resolve_profile_id(),
                                "applicationId": await self.resolve_application_id(), "csr": csr}
        if duration is not None:
            body["attributes"] = {"ttl": f"{max(int(duration.total_seconds() // 3600), 1)}h"}
        out = await self.call("POST", CERTIFICATES, CREATE, body)
        if out.get("certificate") is not None:
            issued = assemble(out["certificate"].get("certificate") or "", out["certificate"].get("certificateChain")
                              or "")
            result.certificate, result.ca = issued.certificate, issued.ca
            return None
        status = out.get("status") or ""
        result.statuses.append(status)
        if status in FINAL:
            raise Terminal(f"Infisical returned status {status!r} for the sign request: {out.get('message')}")
        request_id: str = out.get("certificateRequestId") or ""
        if not request_id:
            raise Terminal(f"sign response had no certificate and no request id to poll: {out}")
        return request_id

    async def poll(self, request_id: str, result: SignResult) -> bool:
        """``poll``: True once ``result`` holds the certificate, False to requeue."""
        out = await self.call("GET", f"{REQUESTS}/{quote(request_id)}", POLL)
        status = out.get("status") or ""
        result.statuses.append(status)
        if status == "issued":
            assert out.get("certificateId"), ("issued but returned no certificate id", out)
            bundle = await self.call("GET", f"{CERTIFICATES}/{quote(out['certificateId'])}/bundle", BUNDLE)
            issued = assemble(bundle.get("certificate") or "", bundle.get("certificateChain") or "")
            result.certificate, result.ca = issued.certificate, issued.ca
            return True
        if status in FINAL:
            raise Terminal(f"certificate request {request_id} {status}: {out.get('errorMessage')}")
        if status in REQUEUE:
            return False
        raise Terminal(f"certificate request {request_id} returned unexpected status {status!r}")

    async def sign(self, csr: str, duration: timedelta | None = timedelta(hours=2160),
                   result: SignResult | None = None) -> SignResult:
        """``Sign`` for a new CertificateRequest, then for each reconcile until it is done (``result``
        keeps the statuses seen even when a Terminal is raised)."""
        result = result if result is not None else SignResult()
        request_id = await self.issue(csr, duration, result)
        deadline = asyncio.get_running_loop().time() + SIGN_DEADLINE
        while request_id is not None and not await self.poll(request_id, result):
            assert asyncio.get_running_loop().time() < deadline, ("never issued", result.statuses)
            await asyncio.sleep(RECONCILE_INTERVAL)
        return result


async def _issuer(http: ApiClient, pki: CompatPki) -> CertManagerIssuer:
    token = await login(http, pki.project.client_id, pki.project.client_secret)
    return CertManagerIssuer(http.with_token(token), pki.application_name, pki.profile_slug)


def _name(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}.{DOMAIN}"


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


# -- the tests -----------------------------------------------------------------------------------------


async def test_issuer_health_check_resolves_the_application_by_name_and_the_profile_slug_without_project_id(
        http: ApiClient, compat_pki: CompatPki) -> None:
    issuer = await _issuer(http, compat_pki)
    await issuer.check()
    assert await issuer.resolve_application_id() == compat_pki.application_id
    assert await issuer.resolve_profile_id() == compat_pki.profile_id


async def test_issuer_signs_a_cert_manager_csr_into_leaf_plus_intermediate_and_the_root_as_ca(
        http: ApiClient, compat_pki: CompatPki) -> None:
    issuer = await _issuer(http, compat_pki)
    name = _name("k8s")
    csr, key = cert_manager_csr(name)
    result = await issuer.sign(csr)
    assert set(result.statuses) <= REQUEUE | {"issued"}, result.statuses
    leaf, *intermediates = x509.load_pem_x509_certificates(result.certificate.encode())
    assert _spki(leaf.public_key()) == _spki(key.public_key())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    assert [c.fingerprint(hashes.SHA256()) for c in intermediates] == fingerprints(compat_pki.issuing_pem)
    assert fingerprints(result.ca) == fingerprints(compat_pki.root_pem), result.ca


async def test_issuer_ttl_in_whole_hours_sets_the_leafs_lifetime(http: ApiClient, compat_pki: CompatPki) -> None:
    issuer = await _issuer(http, compat_pki)
    csr, _ = cert_manager_csr(_name("ttl"), key_algorithm="EC_prime256v1")
    before = datetime.now(UTC).replace(microsecond=0)
    result = await issuer.sign(csr, timedelta(hours=36, minutes=59))  # sent as "36h": signer.go truncates
    leaf = x509.load_pem_x509_certificates(result.certificate.encode())[0]
    lifetime_end = leaf.not_valid_after_utc
    assert before + timedelta(hours=36) <= lifetime_end <= datetime.now(UTC) + timedelta(hours=36, seconds=1), (
        before, lifetime_end)


async def test_issuer_garbage_csr_is_refused_with_a_final_4xx_not_a_retried_5xx(
        http: ApiClient, compat_pki: CompatPki) -> None:
    issuer = await _issuer(http, compat_pki)
    garbage = "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n"
    try:
        await issuer.sign(garbage)
    except Terminal as refused:
        assert " 400 " in str(refused) or " 422 " in str(refused), str(refused)
    else:
        raise AssertionError("a garbage CSR was signed")


async def test_issuer_unknown_profile_slug_fails_its_health_check_with_a_final_404(
        http: ApiClient, compat_pki: CompatPki) -> None:
    issuer = await _issuer(http, compat_pki)
    issuer.profile = "no-such-profile"
    try:
        await issuer.check()
    except Terminal as refused:
        assert " 404 " in str(refused), str(refused)
    else:
        raise AssertionError("an unknown profile resolved")


async def test_issuer_polls_under_16_clients_and_200_requests_never_see_a_status_outside_upstreams_enum(
        api_url: str, compat_pki: CompatPki) -> None:
    seen: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    async def one_client(session: aiohttp.ClientSession, requests: int) -> None:
        issuer = await _issuer(ApiClient(session, api_url), compat_pki)
        for _ in range(requests):
            csr, _ = cert_manager_csr(_name("load"), key_algorithm="EC_prime256v1")
            result = SignResult()
            try:
                await issuer.sign(csr, timedelta(hours=24), result)
            except Terminal as failed:
                outcomes[f"failed: {str(failed)[:160]}"] += 1
            else:
                outcomes["issued" if result.certificate else "issued without a certificate"] += 1
            finally:
                seen.update(result.statuses)

    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(aiohttp.ClientSession()) for _ in range(16)]
        shares = [200 // 16 + (1 if i < 200 % 16 else 0) for i in range(16)]
        await asyncio.gather(*(one_client(s, n) for s, n in zip(sessions, shares, strict=True)))

    assert set(seen) <= UPSTREAM_REQUEST_STATUSES, (seen, outcomes)
    assert outcomes == Counter({"issued": 200}), outcomes


# -- the older issuer (v0.1.3) ---------------------------------------------------------------------------


async def test_older_issuer_health_check_get_api_status_answers_200_ok(http: ApiClient) -> None:
    r = await http.get("/api/status", headers={"Content-Type": "application/json"})
    assert r.status == 200, r.body
    assert isinstance(r.body, dict) and r.body.get("message") == "Ok", r.body


async def test_older_issuer_form_encoded_login_answers_every_field_it_decodes(
        http: ApiClient, compat_project: Project) -> None:
    r = await http.request("POST", "/api/v1/auth/universal-auth/login",
                           data={"clientId": compat_project.client_id, "clientSecret": compat_project.client_secret},
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r.body
    assert_go_decodes(r.body, OLD_ISSUER_LOGIN)
    assert r.body["accessToken"] and isinstance(r.body["accessTokenMaxTTL"], int), r.body
    listed = await http.with_token(r.body["accessToken"]).get(PROFILES, params={"projectId": compat_project.id})
    assert listed.status == 200, listed.body
