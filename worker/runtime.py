"""Per-process runtime of a worker: one event loop, one asyncpg pool and two key rings (root and CA root).

Celery tasks are synchronous; each pool process runs its async work on a loop of its own, created
lazily after the fork (a loop or a pool must never cross a fork).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import uvloop

from shared.config import Settings, get_settings
from shared.db.pool import create_pool
from worker.key_migration import key_rings, prepare_keys

T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings, *, pool_max: int = 4) -> None:
        self.settings = settings
        self._pool_max = pool_max
        # Leaf keys under the root key; CA keys under the CA root key, which the API never has. New data
        # keys are created on a connection of their own, not from the pool: a pool whose every connection
        # is in a transaction waiting for that key could never hand one out.
        self.keyring, self.ca_keyring = key_rings(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: asyncpg.Pool | None = None
        self._pid = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._pid != os.getpid():
            self._loop = uvloop.new_event_loop()
            self._pool = None
            self._pid = os.getpid()
        return self._loop

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await create_pool(self.settings.database_url, min_size=1, max_size=self._pool_max)
            async with pool.acquire() as conn:
                # ConfigurationError: this worker signs nothing. Also re-seals CA keys left from before
                # migration 0007 (normally done already by the worker's start-up).
                await prepare_keys(conn, self.keyring, self.ca_keyring)
            self._pool = pool
        return self._pool

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime
