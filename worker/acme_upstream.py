"""The ACME adapter of an external CA (RFC 8555, DESIGN.md 9), behind ``worker.issuers.ExternalIssuer``.

It speaks to the upstream with certbot's ``acme`` client (JWS, messages, the nonce dance), one RFC 8555
step at a time, so that every step can be resumed from what the upstream says now:

- **new order** (7.4): the order's URL goes to the journal, and is committed, before anything else is
  asked of the upstream. A resumed attempt starts from that URL and never places a second order
  (invariant 10).
- **authorizations and challenges** (7.5, 8): an authorization still pending is answered by dns-01
  through the CA's DNS provider when it has one (wildcards need it), else by http-01 served from the
  database by the API's ``/.well-known/acme-challenge/`` route. Authorizations are polled honouring
  ``Retry-After``.
- **finalize** (7.4) with the request's CSR once the order is ``ready``; a ``processing`` order is
  polled honouring ``Retry-After``; a ``valid`` one's certificate is downloaded with its whole chain.

Every HTTP call takes a token from the CA's rate budget first (``worker.upstream_budget``), and a 429 or
503 pauses the CA's bucket for its ``Retry-After``. Errors are sorted: ``UpstreamTransient`` for what may
pass (unreachable, 5xx, rate limited, a bad nonce twice), ``UpstreamRefused`` for the upstream's final no,
each carrying the upstream's own words.

The ``acme`` client is synchronous: each step runs in a thread, the journal (the database) on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import jwa, jwk

from shared.pki.keys import PrivateKey
from worker.dns_providers import DnsProvider, DnsProviderError
from worker.issuers import OrderJournal, Signed, UpstreamRefused, UpstreamTransient
from worker.upstream_budget import UpstreamBudget

log = logging.getLogger("kms.worker")
T = TypeVar("T")
USER_AGENT = "hanzo-kms-pki (external CA adapter)"
# Upstream problems that may pass: retried after a backoff (RFC 8555 6.7; badNonce only after the client's
# own retry failed too).
TRANSIENT_CODES = {"rateLimited", "serverInternal", "badNonce"}
HTTP01_TTL_SECONDS = 3600.0
DEFAULT_POLL_SECONDS = 1.0


class AccountUnknown(UpstreamTransient):
    """The upstream no longer knows the CA's account (RFC 8555 accountDoesNotExist: a test CA restarted, an
    account purged): the account is registered again with the same key, and the request retried."""


@dataclass(frozen=True)
class AcmeSettings:
    http_timeout: float
    poll_seconds: float
    dns_propagation_seconds: float


class BudgetedNetwork(ClientNetwork):
    """``acme``'s network with every HTTP call (nonces and the directory included) taken from the CA's
    budget first, and the upstream's ``Retry-After`` on 429 and 503 honoured by pausing that budget."""

    def __init__(self, key: jwk.JWK, *, alg: jwa.JWASignature, budget: UpstreamBudget, ca_bundle: str | None,
                 timeout: float, account: messages.RegistrationResource | None = None) -> None:
        super().__init__(key, account=account, alg=alg, user_agent=USER_AGENT, timeout=int(max(1, timeout)))
        self._budget = budget
        self.last_status = 0
        self.last_retry_after: float | None = None
        if ca_bundle:
            # requests takes a CA bundle file where the acme client types a bool.
            self.verify_ssl = _bundle_file(ca_bundle)  # type: ignore[assignment]

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self._budget.take()
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_status = response.status_code
        self.last_retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if response.status_code in (429, 503) and self.last_retry_after:
            self._budget.pause(self.last_retry_after)
        return response


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` (seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(int(value.strip())))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


_bundles: dict[str, str] = {}


def _bundle_file(pem: str) -> str:
    """A file holding ``pem`` (requests reads trust anchors from a file), one per distinct bundle."""
    path = _bundles.get(pem)
    if path is None or not Path(path).exists():
        with tempfile.NamedTemporaryFile("w", prefix="kms-ca-bundle-", suffix=".pem", delete=False) as f:
            f.write(pem)
            path = _bundles[pem] = f.name
    return path


def account_jwk(key: PrivateKey) -> tuple[jwk.JWK, jwa.JWASignature]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return jwk.JWKEC(key=key), jwa.ES256
    if isinstance(key, rsa.RSAPrivateKey):
        return jwk.JWKRSA(key=key), jwa.RS256
    raise ValueError("an ACME account key is EC P-256 or RSA")


class AcmeIssuer:
    """One external ACME CA, as seen from one attempt: its account, budget, DNS provider and settings."""

    def __init__(self, *, name: str, directory_url: str, account_url: str, account_key: PrivateKey,
                 budget: UpstreamBudget, ca_bundle: str | None, dns: DnsProvider | None,
                 settings: AcmeSettings) -> None:
        self.name = name
        self.directory_url = directory_url
        self.settings = settings
        self.dns = dns
        key, alg = account_jwk(account_key)
        self.jwk = key
        self.net = BudgetedNetwork(key, alg=alg, budget=budget, ca_bundle=ca_bundle, timeout=settings.http_timeout,
                                   account=messages.RegistrationResource(uri=account_url,
                                                                         body=messages.Registration()))
        self._client: ClientV2 | None = None

    # -- the steps, each in a thread -----------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(_guarded, self.net, what, fn)

    def _connect(self) -> ClientV2:
        if self._client is None:
            directory = ClientV2.get_directory(self.directory_url, self.net)
            self._client = ClientV2(directory, self.net)
        return self._client

    def _post(self, url: str, obj: Any) -> requests.Response:
        client = self._connect()
        response: requests.Response = self.net.post(url, obj, new_nonce_url=client.directory["newNonce"])
        return response

    def _get(self, url: str) -> requests.Response:
        return self._post(url, None)  # POST-as-GET (RFC 8555 6.3)

    def _new_order(self, csr_pem: str) -> str:
        client = self._connect()
        response = self._post(client.directory["newOrder"], messages.NewOrder(identifiers=_identifiers(csr_pem)))
        location = response.headers.get("Location")
        if not location:
            raise UpstreamRefused("new order: the CA answered without the order's URL (Location)")
        return str(location)

    def _find_placed(self, csr_pem: str, known: set[str]) -> str | None:
        """An open order of this account for exactly the CSR's identifiers that no request holds, or None (also
        when the upstream does not list an account's orders, as Let's Encrypt does not)."""
        assert self.net.account is not None
        account = self._get(self.net.account.uri).json()
        wanted = {(i.typ.name, i.value) for i in _identifiers(csr_pem)}
        page: str | None = account.get("orders") if isinstance(account, dict) else None
        while page:
            response = self._get(page)
            for url in response.json().get("orders", []):
                if url in known:
                    continue
                order, _ = self._order(url)
                status = order.status.name if order.status is not None else ""
                if status != "invalid" and {(i.typ.name, i.value) for i in order.identifiers} == wanted:
                    return str(url)
            page = response.links.get("next", {}).get("url")
        return None

    def _order(self, url: str) -> tuple[messages.Order, float | None]:
        response = self._get(url)
        return messages.Order.from_json(response.json()), retry_after_seconds(response.headers.get("Retry-After"))

    def _authorization(self, url: str) -> tuple[messages.Authorization, float | None]:
        response = self._get(url)
        return (messages.Authorization.from_json(response.json()),
                retry_after_seconds(response.headers.get("Retry-After")))

    # -- the order -----------------------------------------------------------------------------------

    async def obtain(self, csr_pem: str, order_url: str | None, journal: OrderJournal, *,
                     maybe_placed: bool = False) -> Signed:
        if order_url is None and maybe_placed:
            # A newOrder of an earlier attempt may have reached the upstream while its answer was lost: look
            # among the account's orders (RFC 8555 7.1.2.1) for one for these names that no request holds.
            known = await journal.known_orders()
            order_url = await self._call("order lookup", partial(self._find_placed, csr_pem, known))
            if order_url is not None:
                await journal.placed(order_url)
                log.info("upstream order of a lost answer found", extra={"order_url": order_url, "ca": self.name})
        if order_url is None:
            await journal.placing()
            order_url = await self._call("new order", lambda: self._new_order(csr_pem))
            # Invariant 10: stored before the order is polled; from here on only this order is worked on.
            await journal.placed(order_url)
            log.info("upstream order placed", extra={"order_url": order_url, "ca": self.name})
        url = order_url
        deadline = time.monotonic() + self.settings.poll_seconds
        while True:
            order, retry_after = await self._call("order", lambda: self._order(url))
            status = order.status.name if order.status is not None else "unknown"
            if status == "pending":
                await self._authorize(order, journal, deadline)
                continue
            if status == "ready":
                finalize = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem.encode()))
                await self._call("finalize", partial(self._post, order.finalize, finalize))
                continue
            if status == "valid" and order.certificate:
                response = await self._call("certificate download", partial(self._get, order.certificate))
                return _signed(response.text)
            if status == "invalid":
                raise UpstreamRefused(f"the order is invalid: {_problem(order.error)}")
            # processing (or valid without a certificate yet): poll as the upstream asks.
            await self._wait(retry_after, deadline, f"the order stayed {status}")

    async def _wait(self, retry_after: float | None, deadline: float, why: str) -> None:
        pause = retry_after if retry_after is not None else DEFAULT_POLL_SECONDS
        if time.monotonic() + pause > deadline:
            # Let go and retry later (honouring the upstream's wish), rather than hold a worker.
            raise UpstreamTransient(f"{why} past this attempt's {self.settings.poll_seconds:.0f} s", pause)
        await asyncio.sleep(max(0.05, pause))

    async def _authorize(self, order: messages.Order, journal: OrderJournal, deadline: float) -> None:
        for authz_url in order.authorizations:
            authz, retry_after = await self._call("authorization", partial(self._authorization, authz_url))
            published: tuple[str, str] | None = None
            try:
                if authz.status == messages.STATUS_PENDING:
                    published = await self._answer(authz, journal)
                while authz.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    await self._wait(retry_after, deadline, f"the authorization for {authz.identifier.value} "
                                                            "stayed pending")
                    authz, retry_after = await self._call("authorization", partial(self._authorization, authz_url))
            finally:
                if published is not None and self.dns is not None:
                    await asyncio.to_thread(_quietly, partial(self.dns.withdraw, *published))
            if authz.status != messages.STATUS_VALID:
                raise UpstreamRefused(f"the authorization for {authz.identifier.value} is {authz.status.name}: "
                                      + "; ".join(_problem(c.error) for c in authz.challenges if c.error)
                                      or "no reason given")

    def _pick(self, authz: messages.Authorization) -> messages.ChallengeBody:
        offered = {type(c.chall): c for c in authz.challenges}
        if self.dns is not None and challenges.DNS01 in offered:
            return offered[challenges.DNS01]
        if challenges.HTTP01 in offered and not authz.wildcard:
            return offered[challenges.HTTP01]
        types = ", ".join(sorted(c.chall.typ for c in authz.challenges))
        need = "a DNS provider (dnsProviderConfig) for dns-01" if challenges.DNS01 in offered else "another type"
        raise UpstreamRefused(f"the authorization for {authz.identifier.value} offers {types}: this CA needs {need}")

    async def _answer(self, authz: messages.Authorization, journal: OrderJournal) -> tuple[str, str] | None:
        """Publish the answer of the challenge picked and tell the upstream to check it. Returns the DNS record
        published (to remove once the authorization is decided)."""
        challb = self._pick(authz)
        published = None
        if challb.status == messages.STATUS_PENDING:
            response, validation = challb.response_and_validation(self.jwk)
            if isinstance(challb.chall, challenges.DNS01):
                assert self.dns is not None
                dns = self.dns
                name = challb.chall.validation_domain_name(authz.identifier.value).rstrip(".") + "."
                await self._call("dns-01 publish", lambda: dns.publish(name, validation))
                published = (name, validation)
                await self._call("dns-01 propagation", lambda: _visible(dns, name, validation))
                await asyncio.sleep(self.settings.dns_propagation_seconds)
            else:
                await journal.publish_http01(challb.chall.encode("token"), validation)
            await self._call("challenge", lambda: self._post(challb.uri, response))
        return published


def _identifiers(csr_pem: str) -> list[messages.Identifier]:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    dns_names, ips = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in dns_names]
    return identifiers + [messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip)) for ip in ips]


def _guarded(net: BudgetedNetwork, what: str, fn: Callable[[], T]) -> T:
    """Run one upstream step, turning what the upstream (or the network) says into our two errors."""
    try:
        return fn()
    except messages.Error as exc:
        text = f"{what}: {exc}"
        if exc.code == "accountDoesNotExist":
            raise AccountUnknown(text) from exc
        if exc.code in TRANSIENT_CODES or net.last_status >= 500:
            raise UpstreamTransient(text, net.last_retry_after) from exc
        raise UpstreamRefused(text) from exc
    except requests.RequestException as exc:
        raise UpstreamTransient(f"{what}: the CA could not be reached ({type(exc).__name__}: {exc})") from exc
    except errors.ClientError as exc:
        if net.last_status >= 500 or net.last_status == 429:
            raise UpstreamTransient(f"{what}: HTTP {net.last_status} from the CA", net.last_retry_after) from exc
        raise UpstreamRefused(f"{what}: unexpected answer from the CA (HTTP {net.last_status})") from exc
    except DnsProviderError as exc:
        raise UpstreamTransient(f"{what}: {exc}") from exc


def _visible(dns: DnsProvider, name: str, value: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not dns.visible(name, value):
        if time.monotonic() > deadline:
            raise DnsProviderError(f"the TXT record {name} is not visible on the zone's server after {timeout:.0f} s")
        time.sleep(0.2)


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup only: a stale TXT record harms nothing
        log.warning("dns-01 record not removed", extra={"error": f"{type(exc).__name__}: {exc}"})


def _problem(error: messages.Error | None) -> str:
    if error is None:
        return "no reason given"
    return " :: ".join(p for p in (error.typ, error.detail) if p)


def _signed(fullchain_pem: str) -> Signed:
    certs = x509.load_pem_x509_certificates(fullchain_pem.encode())
    if not certs:
        raise UpstreamRefused("the CA's certificate download holds no certificate")
    return Signed(certs[0], certs[1:], certs[0].serial_number)


def register_account(*, directory_url: str, email: str, account_key: PrivateKey, budget: UpstreamBudget,
                     ca_bundle: str | None, eab_kid: str | None, eab_hmac_key: str | None, timeout: float) -> str:
    """Register (or find: the same key always yields the same account, RFC 8555 7.3.1) the account of
    ``account_key`` and return its URL. Synchronous; raises UpstreamTransient or UpstreamRefused."""
    key, alg = account_jwk(account_key)
    net = BudgetedNetwork(key, alg=alg, budget=budget, ca_bundle=ca_bundle, timeout=timeout)

    def register() -> str:
        directory = ClientV2.get_directory(directory_url, net)
        client = ClientV2(directory, net)
        eab = None
        if eab_kid and eab_hmac_key:
            eab = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=eab_kid,
                                                            hmac_key=eab_hmac_key, directory=directory)
        registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True,
                                                          external_account_binding=eab)
        try:
            return str(client.new_account(registration).uri)
        except errors.ConflictError as exc:  # this key's account exists already: it is ours
            return str(exc.location)

    return _guarded(net, "account registration", register)
