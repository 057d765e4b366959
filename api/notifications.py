"""Long-poll support: one LISTEN connection per API process, fanning NOTIFY payloads out to waiters.

Workers ``pg_notify('kms_events', '<kind>:<id>')`` in the transaction that finishes something. A waiter
registers *before* it reads the current state, so a notification between the read and the wait is
never missed; on timeout the caller simply reads the state again (nothing depends on delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import asyncpg

from shared.db.authorities import NOTIFY_CHANNEL

log = logging.getLogger("kms.api")


class Notifications:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._lock = asyncio.Lock()

    async def _ensure_listening(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await asyncpg.connect(self._dsn, timeout=5)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        for fut in self._waiters.pop(payload, ()):
            if not fut.done():
                fut.set_result(None)

    def _on_terminated(self, conn: object) -> None:
        # Wake everybody: they re-read the state, and the next wait reconnects.
        self._conn = None
        waiters, self._waiters = self._waiters, defaultdict(set)
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    @contextlib.asynccontextmanager
    async def subscription(self, key: str):  # type: ignore[no-untyped-def]
        """``async with n.subscription('req:<id>') as wait: ...; await wait(seconds)``."""
        try:
            await self._ensure_listening()
            listening = True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("LISTEN unavailable; long-poll falls back to one re-read", extra={"error": str(exc)})
            listening = False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if listening:
            self._waiters[key].add(fut)

        async def wait(seconds: float) -> None:
            if seconds <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), seconds)

        try:
            yield wait
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(key, None)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
