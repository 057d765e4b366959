"""Rate limits: token buckets in Redis, so that every API process draws from the same buckets.

Buckets, each a Redis hash ``kms:rl:<kind>:<key>`` (settings ``rate_limit_*``; a rate or a burst of 0
turns that limit off):

- ``login:<source>``: login attempts from one source address, taken before the body is read.
- ``login-failures:<client id>``: failed logins for one client id from any source (credential stuffing
  of one identity from many addresses). Each attempt takes a token before the secret is hashed and a
  success gives it back, so attempts in flight count as failures. While the bucket is empty that client
  id cannot log in at all, not even with the right secret, until it refills. That is the price: whoever
  knows a client id (it is no secret) can keep it locked out by failing at the bucket's rate. Generated
  secrets have 256 bits, so guessing them is hopeless anyway; the limit caps the hashing a stuffing run
  gets, and where a lockout costs more than that, a burst of 0 turns it off.
- ``identity:<identity id>``: every authenticated request of one identity (after the auth middleware).
- ``relying-party:<source>``: the public PKI files and OCSP from one source. Much larger than ``source``:
  relying parties behind one address (a proxy checking every client certificate) ask often, and the
  answers are cheap; the bucket only stops a flood meant to make the responder sign without end.
- ``source:<source>``: the other unauthenticated requests from one source (the OpenAPI document).

``/healthz``, ``/readyz`` and ``/metrics`` are never limited: probes and scrapers must see the truth
while the service is under load. A request refused with 401 is not counted (it costs one indexed
lookup, or nothing when the token is malformed).

A bucket holds up to ``burst`` tokens and refills at ``rate`` a second; a request takes one or is
refused with 429 and a ``Retry-After`` of the seconds until a token is back. The update is one Lua
script (EVALSHA), so concurrent processes never lose an update, and it reads Redis's own clock, so
processes whose clocks disagree still agree on a bucket. A key expires once its bucket would be full
again: an idle caller costs nothing.

Where the buckets live: ``KMS_RATE_LIMIT_REDIS_URL``, else the broker when it is Redis. With neither
(an AMQP broker and no URL) each process keeps its own buckets, logged once at start: the limits then
hold per process, so N processes let N times as much through.

When Redis is unreachable (chosen here, in order of what a flood costs): ordinary routes fail open,
with one warning per outage, because refusing every request while the limiter's store is down would
turn a Redis hiccup into an outage of the API. Logins never go unlimited: they fall back to in-process
buckets with the same settings, since the scrypt check is what a flood is after. After a failure Redis
is left alone for a few seconds, so an outage does not add a timeout to every request.

The source is the peer address (an IPv6 one by its /64, the block one host is given).
``X-Forwarded-For`` is read only when the peer is one of ``KMS_TRUSTED_PROXIES``: then the source is
the right-most address in it that is not itself a trusted proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.config import Settings
from shared.errors import ConfigurationError, RateLimited
from shared.tasks import is_redis

log = logging.getLogger("kms.api")
KEY_PREFIX: Final = "kms:rl"
# How long one bucket update may take before Redis counts as unreachable, and how long it is then left alone.
REDIS_TIMEOUT_SECONDS: Final = 0.5
REDIS_RETRY_SECONDS: Final = 5.0
# In-process buckets beyond this many are pruned (full ones first), so a wide flood cannot grow memory.
LOCAL_MAX_BUCKETS: Final = 100_000
UNLIMITED_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics", "/api/status"})

# KEYS[1] the bucket; ARGV rate (tokens/s), burst, need (tokens there must be), take (tokens taken;
# -1 gives one back).
# Returns {1, 0} when served, {0, ms until `need` tokens are there} when refused.
BUCKET_SCRIPT: Final = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local need, take = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < need then
  return {0, math.ceil((need - tokens) / rate * 1000)}
end
if take ~= 0 then
  tokens = math.min(burst, math.max(0, tokens - take))
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
end
return {1, 0}
"""


@dataclass(frozen=True)
class Limit:
    kind: str
    rate: float  # tokens a second
    burst: int
    refusal: str  # what the caller is told, before "; retry in N s"

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0


class LocalBuckets:
    """One kind of bucket in this process's memory, on its monotonic clock: the same arithmetic as the script."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _now(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit.burst), now))
        return min(float(self.limit.burst), tokens + max(0.0, now - at) * self.limit.rate)

    def take(self, key: str, need: int, take: int) -> float:
        """0.0 when served, else the seconds until ``need`` tokens are there."""
        now = time.monotonic()
        tokens = self._now(key, now)
        if tokens < need:
            return (need - tokens) / self.limit.rate
        if take != 0:
            self._buckets[key] = (min(float(self.limit.burst), max(0.0, tokens - take)), now)
            if len(self._buckets) > LOCAL_MAX_BUCKETS:
                self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        # A bucket full by now is the same as none; if that frees too little, the oldest half goes
        # (a few callers get a fresh burst, which is better than memory growing without bound).
        self._buckets = {k: v for k, v in self._buckets.items() if self._now(k, now) < self.limit.burst}
        if len(self._buckets) > LOCAL_MAX_BUCKETS // 2:
            keys = list(self._buckets)
            self._buckets = {k: self._buckets[k] for k in keys[len(keys) // 2:]}


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"KMS_TRUSTED_PROXIES: {exc}") from exc


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _source_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def source_of(request: web.Request, trusted: tuple[Network, ...]) -> str:
    peer = _address(request.remote or "")
    if peer is None:
        return request.remote or "unknown"  # a Unix socket: one source

    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in trusted)

    if not trusted or not is_trusted(peer):
        return _source_key(peer)
    hops = [hop for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a hop the proxies did not write: trust nothing left of it
        if not is_trusted(address):
            return _source_key(address)
    return _source_key(peer)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.login = Limit("login", settings.rate_limit_login_per_minute / 60, settings.rate_limit_login_burst,
                           "too many login attempts from this address")
        self.login_failures = Limit(
            "login-failures", settings.rate_limit_login_failures_per_minute / 60,
            settings.rate_limit_login_failures_burst, "too many failed logins for this client id")
        self.identity = Limit("identity", settings.rate_limit_per_identity_per_second,
                              settings.rate_limit_per_identity_burst, "too many requests from this identity")
        self.source = Limit("source", settings.rate_limit_per_source_per_second, settings.rate_limit_per_source_burst,
                            "too many unauthenticated requests from this address")
        self.relying_party = Limit("relying-party", settings.rate_limit_relying_party_per_second,
                                   settings.rate_limit_relying_party_burst,
                                   "too many CRL or OCSP requests from this address")
        self._trusted = parse_proxies(settings.trusted_proxies)
        limits = (self.login, self.login_failures, self.identity, self.source, self.relying_party)
        self._local = {limit.kind: LocalBuckets(limit) for limit in limits}
        url = settings.rate_limit_redis_url
        if url is None and is_redis(settings.broker_url):
            url = settings.broker_url
        self._redis: aioredis.Redis | None = None
        self._script: Any = None
        if url is None:
            log.warning("rate limits are kept in this process only: the broker is not Redis and "
                        "KMS_RATE_LIMIT_REDIS_URL is unset, so each API process limits on its own")
        else:
            # No retries: a bucket update that fails is answered at once (see the module docstring).
            self._redis = aioredis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                            socket_timeout=REDIS_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0))
            self._script = self._redis.register_script(BUCKET_SCRIPT)
        self._redis_down_until = 0.0
        self._redis_down = False

    def source_of(self, request: web.Request) -> str:
        return source_of(request, self._trusted)

    async def login_attempt(self, request: web.Request) -> None:
        await self._take(self.login, self.source_of(request), local_if_down=True)

    async def unauthenticated_request(self, request: web.Request) -> None:
        await self._take(self.source, self.source_of(request), local_if_down=False)

    async def relying_party_request(self, request: web.Request) -> None:
        await self._take(self.relying_party, self.source_of(request), local_if_down=False)

    async def request_of_identity(self, identity_id: UUID) -> None:
        await self._take(self.identity, str(identity_id), local_if_down=False)

    async def login_begins(self, client_id: str) -> None:
        """Before a client id's secret is hashed. An attempt counts as a failure until it succeeds, so
        that many attempts at once, from many sources, cannot all slip past an almost empty bucket."""
        await self._take(self.login_failures, client_id, local_if_down=True)

    async def login_succeeded(self, client_id: str) -> None:
        await self._take(self.login_failures, client_id, local_if_down=True, need=0, take=-1)

    async def _take(self, limit: Limit, key: str, *, local_if_down: bool, need: int = 1, take: int = 1) -> None:
        if not limit.enabled:
            return
        bucket = f"{KEY_PREFIX}:{limit.kind}:{key}"
        wait = await self._redis_take(limit, bucket, need, take)
        if wait is None:  # Redis is unreachable or not configured
            if self._redis is not None and not local_if_down:
                return  # fail open
            wait = self._local[limit.kind].take(bucket, need, take)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(f"{limit.refusal}; retry in {retry_after} s", retry_after=retry_after)

    async def _redis_take(self, limit: Limit, bucket: str, need: int, take: int) -> float | None:
        if self._script is None or time.monotonic() < self._redis_down_until:
            return None
        try:
            served, wait_ms = await asyncio.wait_for(
                self._script(keys=[bucket], args=[limit.rate, limit.burst, need, take]), REDIS_TIMEOUT_SECONDS)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            if not self._redis_down:
                self._redis_down = True
                log.warning("rate limit store unreachable: ordinary routes go unlimited and logins are "
                            "limited per process until it is back", extra={"error": f"{type(exc).__name__}: {exc}"})
            return None
        if self._redis_down:
            self._redis_down = False
            log.info("rate limit store reachable again")
        return 0.0 if served else int(wait_ms) / 1000

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

