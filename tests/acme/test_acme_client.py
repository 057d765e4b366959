"""The ``acme`` library (certbot's client library) against the real stack: dns-01 for a wildcard name
with a real DNS server, an IP address over http-01, accounts kept apart."""

from __future__ import annotations

import datetime
import json

import josepy as jose
import pytest
from acme import challenges, errors, messages
from cryptography import x509

from tests.acme.support import AcmeWorld, RawAcme, acme_client, csr_for, new_key, problem_type, responder


def _deadline(seconds: float = 60) -> datetime.datetime:
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


def _challenge(authz: messages.AuthorizationResource, kind: type[challenges.Challenge]) -> messages.ChallengeBody:
    [found] = [c for c in authz.body.challenges if isinstance(c.chall, kind)]
    return found


def test_ip_address_identifier_is_validated_over_http01_and_issued(acme_world: AcmeWorld) -> None:
    acme = acme_client(acme_world)
    _, csr = csr_for([], ips=["127.0.0.1"])
    order = acme.new_order(csr)
    [authz] = order.authorizations
    assert authz.body.identifier.typ == messages.IDENTIFIER_IP and authz.body.identifier.value == "127.0.0.1"
    assert [type(c.chall) for c in authz.body.challenges] == [challenges.HTTP01]
    chall = _challenge(authz, challenges.HTTP01)
    response, validation = chall.response_and_validation(acme.net.key)
    with responder(acme_world) as http01:
        http01.answers[chall.chall.encode("token")] = validation
        acme.answer_challenge(chall, response)
        order = acme.poll_and_finalize(order, _deadline())
        assert any(path.endswith(chall.chall.encode("token")) for _, path in http01.requests)
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_wildcard_order_is_validated_over_dns01_against_a_real_dns_server(acme_world: AcmeWorld) -> None:
    acme = acme_client(acme_world)
    _, csr = csr_for(["*.wild.example.test"])
    order = acme.new_order(csr)
    [authz] = order.authorizations
    assert authz.body.identifier.value == "wild.example.test" and authz.body.wildcard is True
    # RFC 8555 7.1.3: a wildcard is proven over DNS only.
    assert [type(c.chall) for c in authz.body.challenges] == [challenges.DNS01]
    chall = _challenge(authz, challenges.DNS01)
    response, validation = chall.response_and_validation(acme.net.key)
    acme_world.dns.set_txt(chall.chall.validation_domain_name("wild.example.test"), validation)
    acme.answer_challenge(chall, response)
    order = acme.poll_and_finalize(order, _deadline())
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.wild.example.test"]


def test_an_account_cannot_see_another_accounts_order_authorization_or_certificate(acme_world: AcmeWorld) -> None:
    owner, other = acme_client(acme_world), RawAcme(acme_world, acme_client(acme_world))
    _, csr = csr_for(["mine.example.test"], ips=["127.0.0.1"])
    order = owner.new_order(csr)
    urls = [order.uri, order.body.finalize, order.authorizations[0].uri, order.authorizations[0].body.challenges[0].uri]
    for url in urls:
        answer = other.post(url, {} if "challenges" in url else None)
        assert answer.status_code == 404, (url, answer.status_code, answer.text)
        assert problem_type(answer) == "malformed"
    # The owner still reads its own (POST-as-GET), and the other account's order list does not hold it.
    assert RawAcme(acme_world, owner).post(order.uri).status_code == 200
    assert other.kid is not None
    listed = other.post(other.kid + "/orders")
    assert listed.status_code == 200 and order.uri not in listed.json()["orders"]


def test_revoke_cert_with_the_certificate_key_and_repeat_is_already_revoked(acme_world: AcmeWorld) -> None:
    acme = acme_client(acme_world)
    key_pem, csr = csr_for([], ips=["127.0.0.1"])
    order = acme.new_order(csr)
    chall = _challenge(order.authorizations[0], challenges.HTTP01)
    response, validation = chall.response_and_validation(acme.net.key)
    with responder(acme_world) as http01:
        http01.answers[chall.chall.encode("token")] = validation
        acme.answer_challenge(chall, response)
        order = acme.poll_and_finalize(order, _deadline())
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert_key = jose.JWKEC(key=load_pem_private_key(key_pem, None))
    stranger = RawAcme(acme_world, acme_client(acme_world))
    payload = {"certificate": jose.encode_b64jose(leaf.public_bytes(serialization.Encoding.DER)), "reason": 1}
    # Another account, which neither ordered it nor holds authorizations for its names, may not.
    refused = stranger.post(stranger.directory["revokeCert"], payload)
    assert refused.status_code == 403 and problem_type(refused) == "unauthorized"
    done = stranger.post(stranger.directory["revokeCert"], payload, jwk=True, key=cert_key)
    assert done.status_code == 200, done.text
    again = stranger.post(stranger.directory["revokeCert"], payload, jwk=True, key=cert_key)
    assert again.status_code == 400 and problem_type(again) == "alreadyRevoked"


def test_key_change_moves_the_account_to_the_new_key(acme_world: AcmeWorld) -> None:
    from acme import jws as acme_jws

    acme = acme_client(acme_world)
    raw = RawAcme(acme_world, acme)
    new = new_key()
    url = raw.directory["keyChange"]
    inner = acme_jws.JWS.sign(json.dumps({"account": raw.kid, "oldKey": raw.key.public_key().to_json()}).encode(),
                              key=new, alg=jose.ES256, nonce=None, url=url)
    answer = raw.post(url, inner.json_dumps().encode())
    assert answer.status_code == 200, answer.text
    # The old key no longer signs for the account; the new one does.
    old = raw.post(raw.kid)
    assert old.status_code == 400 and problem_type(old) == "malformed"
    assert raw.post(raw.kid, key=new).status_code == 200


def test_a_deactivated_account_can_do_nothing_more(acme_world: AcmeWorld) -> None:
    acme = acme_client(acme_world)
    acme.deactivate_registration(acme.net.account)
    with pytest.raises(errors.Error) as refused:
        acme.new_order(csr_for(["late.example.test"])[1])
    assert "unauthorized" in str(refused.value)
