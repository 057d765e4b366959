"""The ``acme`` library (certbot's client library) against the real stack: dns-01 for a wildcard name
with a real DNS server, an IP address over http-01, accounts kept apart."""

from __future__ import annotations

import datetime

from acme import challenges, messages
from cryptography import x509

from tests.acme.support import AcmeWorld, acme_client, csr_for, responder


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
