"""Issuers: who signs a certificate template. One small protocol, one adapter per kind of issuer.

External CAs are adapters of a second protocol, ``ExternalIssuer``: the certificate comes from another CA
over the network, for a CSR, in an order that may outlive one attempt (the ACME adapter is
``worker.external.AcmeIssuer``). They run on the ``kms.external`` queue, so a slow external CA cannot
starve local signing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509

from shared.errors import FieldError, PolicyViolation
from shared.pki import builder as x509_builder
from shared.pki.keys import PrivateKey, PublicKey
from shared.pki.template import CertificateTemplate
from worker.ca_keys import SigningCa


@dataclass(frozen=True)
class Signed:
    certificate: x509.Certificate
    chain: list[x509.Certificate]  # issuer first, up to the root; empty when self-signed
    serial: int


class Issuer(Protocol):
    def issue(self, template: CertificateTemplate, public_key: PublicKey, private_key: PrivateKey | None,
              *, backdate: timedelta) -> Signed: ...


class OrderJournal(Protocol):
    """Where an external issuer writes down what it did upstream, as it does it (DESIGN.md invariant 10)."""

    async def placing(self) -> None:
        """A new order is about to be asked for: committed first, so that an answer lost on the way is looked
        for upstream (``maybe_placed``) rather than ordered again."""

    async def placed(self, order_url: str) -> None:
        """The upstream order now exists: committed before the issuer asks anything more of it."""

    async def known_orders(self) -> set[str]:
        """Every order URL already recorded for this CA (those belong to other requests)."""

    async def publish_http01(self, token: str, key_authorization: str) -> None:
        """An http-01 answer for the service's /.well-known/acme-challenge/ route to serve."""


class ExternalIssuer(Protocol):
    async def obtain(self, csr_pem: str, order_url: str | None, journal: OrderJournal, *,
                     maybe_placed: bool = False) -> Signed:
        """The certificate for ``csr_pem``: from the order at ``order_url`` when one was placed before (it
        is resumed, never placed again), else (once an order placed by a lost attempt, ``maybe_placed``, is
        looked for upstream and not found) from a new order. Raises ``UpstreamTransient`` (try again
        later) or ``UpstreamRefused`` (final), each with the upstream's own reason."""


class UpstreamRefused(Exception):
    """The external CA said no (an invalid authorization, a refused CSR...): the request fails with this."""


class UpstreamTransient(Exception):
    """The external CA could not answer now (unreachable, 5xx, rate limited): retry after a backoff, no
    sooner than ``retry_after`` seconds when the upstream named one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InternalCaIssuer:
    """Signs with one of the project's internal CAs (its key decrypted in this worker only)."""

    def __init__(self, ca: SigningCa, public_url: str | None = None) -> None:
        if ca.authority.status != "active":
            raise PolicyViolation([FieldError("profileId", f"CA {ca.authority.name!r} is {ca.authority.status}; "
                                                           "it signs nothing")])
        self.ca = ca
        self.urls = x509_builder.issuer_urls(public_url, ca.authority.id)

    def issue(self, template: CertificateTemplate, public_key: PublicKey, private_key: PrivateKey | None,
              *, backdate: timedelta) -> Signed:
        not_before, not_after = x509_builder.resolve_validity(
            template.validity, now=datetime.now(UTC), backdate=backdate,
            issuer_not_after=self.ca.certificate.not_valid_after_utc,
            issuer_not_before=self.ca.certificate.not_valid_before_utc)
        serial = x509_builder.new_serial()
        cert = x509_builder.build_leaf_certificate(
            template=template, public_key=public_key, issuer_cert=self.ca.certificate, issuer_key=self.ca.key,
            serial=serial, not_before=not_before, not_after=not_after, urls=self.urls)
        return Signed(cert, self.ca.chain, serial)


class SelfSignedIssuer:
    """The certificate signs itself: only possible with a key the server generated."""

    def issue(self, template: CertificateTemplate, public_key: PublicKey, private_key: PrivateKey | None,
              *, backdate: timedelta) -> Signed:
        if private_key is None:
            raise PolicyViolation([FieldError("csr", "a self-signed profile needs a server-generated key; "
                                                     "send attributes without a CSR")])
        not_before, not_after = x509_builder.resolve_validity(
            template.validity, now=datetime.now(UTC), backdate=backdate, issuer_not_after=None)
        serial = x509_builder.new_serial()
        cert = x509_builder.build_self_signed_certificate(
            template=template, private_key=private_key, serial=serial, not_before=not_before, not_after=not_after)
        return Signed(cert, [], serial)
