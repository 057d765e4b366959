"""dns-01 through a provider interface (DESIGN.md 9): who publishes the ``_acme-challenge`` TXT records.

One small protocol and one adapter per provider. ``rfc2136`` speaks RFC 2136 dynamic updates signed with
TSIG (RFC 8945) to the zone's primary server (bind9, Knot, PowerDNS...), with ``dnspython``. A CA's
``dnsProviderConfig`` names the provider and its settings; the TSIG secret is sealed with the CA's other
secrets and handed to the provider here, in the worker, only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

TXT_TTL = 60
TIMEOUT_SECONDS = 10.0


class DnsProviderError(Exception):
    """The DNS server refused or did not answer an update (the message says which and why)."""


class DnsProvider(Protocol):
    def publish(self, name: str, value: str) -> None:
        """Add a TXT record ``value`` at ``name`` (fully qualified), beside any others there."""

    def withdraw(self, name: str, value: str) -> None:
        """Remove that TXT record (absent already: nothing to do)."""

    def visible(self, name: str, value: str) -> bool:
        """Whether the zone's server answers ``name`` with ``value``."""


@dataclass(frozen=True)
class Rfc2136Provider:
    nameserver: str
    port: int
    zone: str
    key_name: str
    algorithm: str
    secret: str

    def _update(self) -> dns.update.UpdateMessage:
        keyring = dns.tsigkeyring.from_text({self.key_name: self.secret})
        return dns.update.UpdateMessage(self.zone, keyring=keyring, keyname=dns.name.from_text(self.key_name),
                                        keyalgorithm=dns.name.from_text(self.algorithm))

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            answer = dns.query.tcp(update, self.nameserver, port=self.port, timeout=TIMEOUT_SECONDS)
        except (OSError, dns.exception.DNSException) as exc:
            raise DnsProviderError(f"RFC 2136 {what} to {self.nameserver}:{self.port} failed: {exc}") from exc
        if answer.rcode() != dns.rcode.NOERROR:
            raise DnsProviderError(f"RFC 2136 {what} refused by {self.nameserver}:{self.port}: "
                                   f"{dns.rcode.to_text(answer.rcode())}")

    def _relative(self, name: str) -> dns.name.Name:
        absolute = dns.name.from_text(name)
        origin = dns.name.from_text(self.zone)
        if not absolute.is_subdomain(origin):
            raise DnsProviderError(f"{name} is not in the provider's zone {self.zone}")
        return absolute.relativize(origin)

    def publish(self, name: str, value: str) -> None:
        update = self._update()
        update.add(self._relative(name), TXT_TTL, dns.rdatatype.TXT, f'"{value}"')
        self._send(update, f"add of TXT {name}")

    def withdraw(self, name: str, value: str) -> None:
        update = self._update()
        update.delete(self._relative(name), dns.rdatatype.TXT, f'"{value}"')
        self._send(update, f"delete of TXT {name}")

    def visible(self, name: str, value: str) -> bool:
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        try:
            answer = dns.query.udp(query, self.nameserver, port=self.port, timeout=TIMEOUT_SECONDS)
        except (OSError, dns.exception.DNSException):
            return False
        return any(value == b"".join(r.strings).decode() for rrset in answer.answer
                   if rrset.rdtype == dns.rdatatype.TXT for r in rrset)

    def wait_visible(self, name: str, value: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.visible(name, value):
                return True
            time.sleep(0.2)
        return False


def provider_from(config: dict[str, Any], secret: str | None) -> DnsProvider:
    """The provider a CA's stored ``dnsProviderConfig`` (and its sealed secret) describe."""
    if config.get("provider") == "rfc2136":
        if not secret:
            raise DnsProviderError("the RFC 2136 provider has no TSIG secret")
        return Rfc2136Provider(nameserver=str(config["nameserver"]), port=int(config.get("port", 53)),
                               zone=str(config["zone"]), key_name=str(config["tsigKeyName"]),
                               algorithm=str(config.get("tsigAlgorithm", "hmac-sha256")), secret=secret)
    raise DnsProviderError(f"unknown DNS provider {config.get('provider')!r}")
