"""The rate budget of an external CA (DESIGN.md 9): a token bucket per CA in Redis, shared by every worker.

Every HTTP call to the upstream takes a token first (the budgeted network of ``worker.external``), so the
configured rate is never exceeded however many workers call the CA. When the upstream says to wait (429
or 503 with ``Retry-After``), the CA's bucket is paused until then, for every worker at once.

One Lua script per operation, on Redis's own clock (``TIME``), so concurrent workers never lose an update
and their clocks do not matter. Without Redis (a broker of another kind and no budget URL) the bucket lives
in the process: the limit then holds per worker process only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from shared.config import Settings
from shared.tasks import is_redis

# KEYS: bucket, pause; ARGV: rate, burst. Returns "0" when a token was taken, else the seconds to wait
# (strings: Redis turns Lua numbers into integers).
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return tostring(paused - now) end
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = '0'
if tokens >= 1 then tokens = tokens - 1 else wait = tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return wait
"""
# KEYS: pause; ARGV: seconds. Pauses the CA until now + seconds (never shortens a longer pause).
PAUSE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untils = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untils > current then redis.call('SET', KEYS[1], tostring(untils), 'EX', math.ceil(tonumber(ARGV[1])) + 1) end
return 1
"""
# A wait the bucket asks for is slept in slices, so a longer pause set meanwhile is seen.
MAX_SLEEP = 1.0


class UpstreamBudget:
    """The bucket of one CA: ``take`` blocks until a call may go; ``pause`` honours an upstream's wait."""

    def __init__(self, redis_url: str | None, ca_id: object, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._keys = [f"kms:external:budget:{ca_id}", f"kms:external:pause:{ca_id}"]
        self._redis: Any = redis.Redis.from_url(redis_url, socket_timeout=5) if redis_url else None
        self._take: Any = self._redis.register_script(TAKE_SCRIPT) if self._redis is not None else None
        self._pause: Any = self._redis.register_script(PAUSE_SCRIPT) if self._redis is not None else None
        self._lock = threading.Lock()
        self._tokens, self._at, self._paused_until = float(burst), time.monotonic(), 0.0

    def take(self) -> None:
        while True:
            wait = float(self._take(keys=self._keys, args=[self.rate, self.burst])) if self._take is not None \
                else self._take_local()
            if wait <= 0:
                return
            time.sleep(min(wait, MAX_SLEEP))

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._pause is not None:
            self._pause(keys=self._keys[1:], args=[seconds])
        else:
            with self._lock:
                self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _take_local(self) -> float:
        with self._lock:
            now = time.monotonic()
            if self._paused_until > now:
                return self._paused_until - now
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def budget_redis_url(settings: Settings) -> str | None:
    """Where the buckets live: the budget URL, else the broker when it is Redis, else nowhere (in-process)."""
    if settings.external_budget_redis_url:
        return settings.external_budget_redis_url
    if is_redis(settings.broker_url):
        return settings.broker_url
    return None
