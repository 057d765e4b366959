"""ACME challenge validation (RFC 8555 8.3 http-01, 8.4 dns-01; RFC 8738 for IP addresses).

Runs in a worker on the network queue (``kms.external``), never in the API: it is the only code of the
service that connects to hosts named by clients. One try per task run; a try that fails while the
bounded total time (``KMS_ACME_VALIDATION_TIMEOUT_SECONDS`` since the client asked) remains is
recorded on the challenge and tried again later; past it, the challenge, its authorization and its
order become invalid with the last error.

Where it looks: http-01 fetches ``http://<identifier>:<KMS_ACME_HTTP01_PORT>/.well-known/acme-challenge/
<token>`` (DNS names resolved with ``KMS_ACME_DNS_RESOLVER``, so tests on loopback can point both at a
local DNS server and a local client); redirects are not followed. dns-01 reads the TXT records of
``_acme-challenge.<name>`` from the same resolver, uncached, so a retry sees a record added since.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from josepy.json_util import encode_b64jose

from shared.config import Settings
from shared.db import acme as db
from shared.db.acme import ValidationTarget
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
ERROR_PREFIX = "urn:ietf:params:acme:error:"
MAX_BODY = 4096


class ChallengeFailed(Exception):
    """A try that did not prove control: ``kind`` is the ACME error type."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail

    def document(self) -> dict[str, Any]:
        return {"type": ERROR_PREFIX + self.kind, "detail": self.detail, "status": 400}


@dataclass(frozen=True)
class Outcome:
    status: str  # valid | invalid | retry | skipped
    error: str | None = None


def key_authorization(target: ValidationTarget) -> str:
    return f"{target.token}.{target.thumbprint}"


def resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    """The resolver validation asks: the system's, or the servers KMS_ACME_DNS_RESOLVER names."""
    if settings.acme_dns_resolver.strip().lower() == "system":
        return dns.asyncresolver.Resolver()
    r = dns.asyncresolver.Resolver(configure=False)
    servers: list[str | dns.nameserver.Nameserver] = []
    for item in settings.acme_dns_resolver.split(","):
        host, port = _host_port(item.strip())
        servers.append(dns.nameserver.Do53Nameserver(host, port))
    r.nameservers = servers
    return r


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if item.count(":") == 1:
        host, port = item.split(":")
        return host, int(port)
    return item, 53


async def _addresses(name: str, settings: Settings) -> list[str]:
    """The addresses of a DNS name, from the configured resolver (IPv4 first, as most validators try)."""
    timeout = settings.acme_validation_attempt_timeout_seconds
    if settings.acme_dns_resolver.strip().lower() == "system":
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                name, None, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError) as exc:
            raise ChallengeFailed("dns", f"cannot resolve {name}: {exc}") from None
        return sorted({str(i[4][0]) for i in infos}, key=lambda a: ":" in a)
    r = resolver(settings)
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await r.resolve(name, rdtype, lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise ChallengeFailed("dns", f"DNS lookup of {name} {rdtype} failed: {exc}") from None
        found += [rr.to_text() for rr in answer]
    if not found:
        raise ChallengeFailed("dns", f"{name} has no A or AAAA record")
    return found


async def check_http01(target: ValidationTarget, settings: Settings) -> None:
    expected = key_authorization(target)
    port = settings.acme_http01_port
    if target.identifier_type == "ip":
        addresses = [target.value]
    else:
        addresses = await _addresses(target.value, settings)
    host = f"[{target.value}]" if ":" in target.value else target.value
    path = f"/.well-known/acme-challenge/{target.token}"
    timeout = aiohttp.ClientTimeout(total=settings.acme_validation_attempt_timeout_seconds)
    last: ChallengeFailed | None = None
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        for address in addresses:
            literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
            url = f"http://{literal}:{port}{path}"
            headers = {"Host": host if port == 80 else f"{host}:{port}", "User-Agent": "hanzo-kms-acme-validator"}
            try:
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    body = await resp.content.read(MAX_BODY)
                    if resp.status != 200:
                        raise ChallengeFailed("unauthorized", f"http://{host}:{port}{path} answered {resp.status}")
            except ChallengeFailed as exc:
                last = exc
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = ChallengeFailed("connection", f"cannot fetch http://{host}:{port}{path} from {address}: "
                                                     f"{type(exc).__name__}: {exc}"[:400])
                continue
            if body.strip() == expected.encode():
                return
            last = ChallengeFailed("incorrectResponse", f"http://{host}:{port}{path} answered "
                                   f"{body[:80]!r}, not the key authorization")
    assert last is not None
    raise last


async def check_dns01(target: ValidationTarget, settings: Settings) -> None:
    expected = encode_b64jose(hashlib.sha256(key_authorization(target).encode()).digest())
    name = f"_acme-challenge.{target.value}"
    try:
        answer = await resolver(settings).resolve(
            name, "TXT", lifetime=settings.acme_validation_attempt_timeout_seconds)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise ChallengeFailed("unauthorized", f"no TXT record at {name}") from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise ChallengeFailed("dns", f"DNS lookup of {name} TXT failed: {exc}") from None
    values = [b"".join(rr.strings).decode(errors="replace") for rr in answer]
    if expected not in values:
        raise ChallengeFailed("incorrectResponse", f"the TXT records at {name} ({', '.join(values)[:200]}) do not "
                                                   "hold the key authorization digest")


CHECKS = {"http-01": check_http01, "dns-01": check_dns01}


async def validate(rt: Runtime, challenge_id: UUID) -> Outcome:
    """One try at a challenge the client asked to have validated."""
    pool = await rt.pool()
    settings = rt.settings
    target = await db.validation_target(pool, challenge_id)
    if target is None or target.status != "processing":
        return Outcome("skipped")  # a second delivery, or an order cleaned up meanwhile
    try:
        await CHECKS[target.type](target, settings)
    except ChallengeFailed as exc:
        remaining = settings.acme_validation_timeout_seconds - target.seconds_since_start
        if remaining > settings.acme_validation_retry_seconds:
            await db.note_attempt(pool, challenge_id, exc.document())
            log.info("acme challenge not yet valid", extra={"challenge_id": str(challenge_id), "error": exc.detail})
            return Outcome("retry", exc.detail)
        await db.challenge_failed(pool, challenge_id, exc.document())
        log.info("acme challenge invalid", extra={"challenge_id": str(challenge_id), "error": exc.detail})
        return Outcome("invalid", exc.detail)
    await db.challenge_passed(pool, challenge_id)
    log.info("acme challenge valid", extra={"challenge_id": str(challenge_id), "type": target.type})
    return Outcome("valid")


@dataclass(frozen=True)
class CleanUp:
    nonces: int
    orders: int
    authorizations: int
    resent: int


async def clean_up(rt: Runtime, resend: Any) -> CleanUp:
    """Beat's ACME hygiene: remove what has expired, and ring again for validations whose message was
    lost (no progress for two retry intervals plus a try's timeout)."""
    pool = await rt.pool()
    cleaned = await db.delete_expired(pool)
    settings = rt.settings
    stalled = await db.stalled_validations(
        pool, 2 * settings.acme_validation_retry_seconds + settings.acme_validation_attempt_timeout_seconds)
    for challenge_id in stalled:
        resend(str(challenge_id))
    if cleaned.nonces or cleaned.orders or cleaned.authorizations or stalled:
        log.info("acme clean-up", extra={"nonces": cleaned.nonces, "orders": cleaned.orders,
                                          "authorizations": cleaned.authorizations, "resent": len(stalled)})
    return CleanUp(cleaned.nonces, cleaned.orders, cleaned.authorizations, len(stalled))
