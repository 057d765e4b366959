"""Every way an ACME request goes wrong is answered with the ACME error type a client acts on (RFC 8555
6.7), in a problem document with a fresh nonce, and never a 500 (issue 12 "must show" 3, and bad input)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import josepy as jose
import pytest
import requests
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme.support import ACME, AcmeWorld, RawAcme, acme_client, acme_profile, csr_for, new_key, problem_type
from tests.api_client import ApiClient


@pytest.fixture(scope="module")
def ready_profile(acme_world: AcmeWorld) -> str:
    """An ACME profile with acmeConfig.skipDnsOwnershipVerification: its orders are ready at once."""
    async def make() -> str:
        async with aiohttp.ClientSession() as session:
            admin = ApiClient(session, acme_world.api_url, acme_world.admin_token)
            return await acme_profile(admin, acme_world.project_id, acme_world.policy_id, acme_world.issuing_id,
                                      "acme-ready", {"skipEabBinding": True, "skipDnsOwnershipVerification": True})
    return asyncio.run(make())


@pytest.fixture
def raw(acme_world: AcmeWorld) -> Iterator[RawAcme]:
    yield RawAcme(acme_world, acme_client(acme_world))


def _order(raw: RawAcme, *names: str) -> requests.Response:
    answer = raw.post(raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]})
    return answer


def _is_acme_problem(answer: requests.Response, status: int, kind: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert problem_type(answer) == kind, answer.text
    assert answer.json()["status"] == status
    assert answer.headers.get("Replay-Nonce"), "every ACME answer carries a fresh nonce"
    assert answer.headers.get("Cache-Control") == "no-store"


def test_a_nonce_that_was_never_issued_is_bad_nonce(raw: RawAcme) -> None:
    made_up = jose.encode_b64jose(b"0123456789abcdef")
    _is_acme_problem(raw.post(raw.kid or "", nonce=made_up), 400, "badNonce")


def test_a_nonce_is_good_once(raw: RawAcme) -> None:
    nonce = raw.nonce()
    assert raw.post(raw.kid or "", nonce=nonce).status_code == 200
    _is_acme_problem(raw.post(raw.kid or "", nonce=nonce), 400, "badNonce")


def test_a_bad_nonce_answer_carries_the_nonce_to_retry_with(raw: RawAcme) -> None:
    """RFC 8555 6.5: clients retry a badNonce once, with the nonce that answer carries."""
    refused = raw.post(raw.kid or "", nonce=jose.encode_b64jose(b"stale-nonce-1234"))
    _is_acme_problem(refused, 400, "badNonce")
    assert raw.post(raw.kid or "", nonce=refused.headers["Replay-Nonce"]).status_code == 200


def test_finalize_before_the_order_is_ready_is_order_not_ready(raw: RawAcme) -> None:
    order = _order(raw, "notready.example.test")
    assert order.status_code == 201 and order.json()["status"] == "pending"
    _, csr = csr_for(["notready.example.test"])
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    _is_acme_problem(raw.post(order.json()["finalize"], {"csr": jose.encode_b64jose(der)}), 403, "orderNotReady")


def test_a_csr_naming_other_names_than_the_order_is_bad_csr(acme_world: AcmeWorld, ready_profile: str) -> None:
    raw = RawAcme(acme_world, acme_client(acme_world, profile_id=ready_profile))
    order = _order(raw, "asked.example.test")
    assert order.status_code == 201 and order.json()["status"] == "ready", order.text
    _, csr = csr_for(["asked.example.test", "smuggled.example.test"])
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    answer = raw.post(order.json()["finalize"], {"csr": jose.encode_b64jose(der)})
    _is_acme_problem(answer, 400, "badCSR")
    assert "smuggled.example.test" in answer.json()["detail"]
    # Nothing was registered: the order is still ready, and a CSR for its names is issued.
    _, good = csr_for(["asked.example.test"])
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    finalized = raw.post(order.json()["finalize"], {"csr": jose.encode_b64jose(der)})
    assert finalized.status_code == 200 and finalized.json()["status"] in ("processing", "valid"), finalized.text
    assert finalized.headers.get("Retry-After") or finalized.json()["status"] == "valid"
    deadline = time.monotonic() + 30
    view = finalized.json()
    while view["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        view = raw.post(order.headers["Location"]).json()
    assert view["status"] == "valid", view
    chain = raw.post(view["certificate"])
    assert chain.status_code == 200 and chain.headers["Content-Type"] == "application/pem-certificate-chain"
    assert len(x509.load_pem_x509_certificates(chain.content)) == 3  # leaf, issuing CA, root
    # A second finalize of a valid order registers nothing more.
    _is_acme_problem(raw.post(order.json()["finalize"], {"csr": jose.encode_b64jose(der)}), 403, "orderNotReady")


def test_a_name_the_policy_denies_is_rejected_identifier(raw: RawAcme) -> None:
    answer = _order(raw, "ok.example.test", "www.elsewhere.org")
    _is_acme_problem(answer, 400, "rejectedIdentifier")
    [sub] = answer.json()["subproblems"]
    assert sub["identifier"] == {"type": "dns", "value": "www.elsewhere.org"}
    assert sub["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"


def test_a_protected_header_url_for_another_host_is_malformed(raw: RawAcme) -> None:
    kid = raw.kid or ""
    foreign = kid.replace("127.0.0.1", "acme.elsewhere.org")
    answer = raw.post(kid, header_url=foreign)
    _is_acme_problem(answer, 400, "malformed")
    assert "url" in answer.json()["detail"]


def test_a_challenge_that_fails_validation_makes_the_order_invalid_with_the_error(raw: RawAcme) -> None:
    """Nobody answers on the http-01 port: the worker tries until its bounded time (4 s here) is over."""
    order = _order(raw, "nobody-home.example.test").json()
    authz = raw.post(order["authorizations"][0]).json()
    [http01] = [c for c in authz["challenges"] if c["type"] == "http-01"]
    started = time.monotonic()
    assert raw.post(http01["url"], {}).json()["status"] == "processing"
    deadline = time.monotonic() + 30
    while (view := raw.post(order_url := order_location(raw, order))).json()["status"] == "pending":
        assert time.monotonic() < deadline, "the failing challenge was never given up"
        time.sleep(0.3)
    elapsed = time.monotonic() - started
    assert view.json()["status"] == "invalid"
    assert 3 <= elapsed < 20, elapsed
    challenge = raw.post(http01["url"]).json()
    assert challenge["status"] == "invalid"
    assert challenge["error"]["type"] == "urn:ietf:params:acme:error:connection", challenge
    assert "nobody-home.example.test" in challenge["error"]["detail"]
    assert raw.post(order["authorizations"][0]).json()["status"] == "invalid"
    assert view.json()["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert order_url


def order_location(raw: RawAcme, order: dict[str, str]) -> str:
    return order["finalize"].removesuffix("/finalize")


def test_a_wrong_key_authorization_is_incorrect_response(acme_world: AcmeWorld, raw: RawAcme) -> None:
    from tests.acme.support import responder

    order = _order(raw, "liar.example.test").json()
    authz = raw.post(order["authorizations"][0]).json()
    [http01] = [c for c in authz["challenges"] if c["type"] == "http-01"]
    with responder(acme_world) as http01_server:
        http01_server.answers[http01["token"]] = "not-the-key-authorization"
        raw.post(http01["url"], {})
        deadline = time.monotonic() + 30
        while (challenge := raw.post(http01["url"]).json())["status"] == "processing":
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert challenge["status"] == "invalid"
    assert challenge["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse", challenge
    # The validator asked for the identifier's own name on the configured port.
    assert any(host == f"liar.example.test:{acme_world.http01_port}" for host, _ in http01_server.requests)


def test_new_account_without_external_account_binding_is_external_account_required(acme_world: AcmeWorld) -> None:
    raw = RawAcme(acme_world, acme_client(acme_world))  # any client; the request below is to the EAB profile
    directory = requests.get(acme_world.directory_url(), timeout=10).json()
    assert directory["meta"]["externalAccountRequired"] is True
    raw.directory = messages.Directory.from_json(directory)
    answer = raw.post(directory["newAccount"], {"termsOfServiceAgreed": True}, jwk=True, key=new_key())
    _is_acme_problem(answer, 401, "externalAccountRequired")


def test_external_account_binding_with_a_wrong_key_is_unauthorized(acme_world: AcmeWorld) -> None:
    raw = RawAcme(acme_world, acme_client(acme_world))
    directory = messages.Directory.from_json(requests.get(acme_world.directory_url(), timeout=10).json())
    raw.directory = directory
    key = new_key()
    binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=acme_world.eab_kid,
                                                        hmac_key=jose.encode_b64jose(b"k" * 32), directory=directory)
    answer = raw.post(directory["newAccount"], {"externalAccountBinding": binding}, jwk=True, key=key)
    _is_acme_problem(answer, 403, "unauthorized")


# -- bad input: problem documents, never a 500 -------------------------------------------------------


def _post_raw(raw: RawAcme, body: bytes, content_type: str = "application/jose+json") -> requests.Response:
    return raw.http.post(raw.directory["newOrder"], data=body, headers={"Content-Type": content_type}, timeout=30)


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b"null", b'"a string"', b"\xff\xfe", b'{"protected": 1, "payload": "", "signature": ""}',
    b'{"protected": "!!", "payload": "", "signature": ""}', b'{"protected": "e30", "payload": "", "signature": "AA"}',
    b'{"signatures": [], "payload": ""}', b"[" * 30_000 + b"]" * 30_000,
], ids=["broken-json", "array", "null", "string", "not-utf8", "protected-not-string", "protected-not-base64",
        "empty-header", "general-serialization", "deeply-nested"])
def test_malformed_bodies_are_malformed(raw: RawAcme, body: bytes) -> None:
    _is_acme_problem(_post_raw(raw, body), 400, "malformed")


def test_a_wrong_content_type_is_415_malformed(raw: RawAcme) -> None:
    _is_acme_problem(_post_raw(raw, b"{}", "application/json"), 415, "malformed")


def test_a_huge_body_is_413_malformed_announced_or_chunked(raw: RawAcme) -> None:
    _is_acme_problem(_post_raw(raw, b"x" * (2 * 1024 * 1024)), 413, "malformed")

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536
    _is_acme_problem(raw.http.post(raw.directory["newOrder"], data=chunks(),
                                   headers={"Content-Type": "application/jose+json"}, timeout=30), 413, "malformed")


def test_a_jws_signed_by_another_key_than_the_accounts_is_malformed(raw: RawAcme) -> None:
    _is_acme_problem(raw.post(raw.kid or "", key=new_key()), 400, "malformed")


def test_a_tampered_payload_fails_the_signature(raw: RawAcme) -> None:
    from acme import jws as acme_jws

    signed = json.loads(acme_jws.JWS.sign(b"{}", key=raw.key, alg=jose.ES256, nonce=jose.decode_b64jose(raw.nonce()),
                                          url=raw.directory["newOrder"], kid=raw.kid).json_dumps())
    signed["payload"] = jose.encode_b64jose(b'{"identifiers": [{"type": "dns", "value": "x.example.test"}]}')
    _is_acme_problem(_post_raw(raw, json.dumps(signed).encode()), 400, "malformed")


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_symmetric_or_no_signature_algorithms_are_refused(raw: RawAcme, alg: str) -> None:
    protected = jose.encode_b64jose(json.dumps({"alg": alg, "kid": raw.kid, "nonce": raw.nonce(),
                                                "url": raw.directory["newOrder"]}).encode())
    body = json.dumps({"protected": protected, "payload": jose.encode_b64jose(b"{}"), "signature": ""}).encode()
    answer = _post_raw(raw, body)
    assert answer.status_code == 400 and problem_type(answer) in ("badSignatureAlgorithm", "malformed"), answer.text


def test_an_unknown_or_non_acme_profile_has_no_acme_server(acme_world: AcmeWorld) -> None:
    for profile in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        answer = requests.get(f"{acme_world.api_url}{ACME}/{profile}/directory", timeout=10)
        assert answer.status_code == 404 and problem_type(answer) == "malformed"


def test_unknown_resources_and_garbage_ids_are_404_problems(raw: RawAcme) -> None:
    base = raw.directory["newOrder"].removesuffix("/new-order")
    for tail in ("/orders/not-an-id", "/orders/00000000-0000-0000-0000-000000000000",
                 "/authorizations/00000000-0000-0000-0000-000000000000",
                 "/authorizations/x/challenges/y", "/accounts/00000000-0000-0000-0000-000000000000"):
        answer = raw.post(base + tail)
        assert answer.status_code in (403, 404), (tail, answer.text)
        assert problem_type(answer) in ("malformed", "unauthorized")
