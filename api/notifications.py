"""The one long-poll primitive: requests, batches and CAs all wait for their outcome the same way.

Workers ``pg_notify('kms_events', '<kind>:<id>')`` in the transaction that changes something a client
may wait for. Each API process keeps ONE health-checked LISTEN connection and fans the payloads out to
subscriptions. The rules that make waiting cheap and never wrong:

- **Subscribe, then read.** A waiter registers before it reads the current state, so a change between
  the read and the wait is never missed.
- **Re-armed after each wake.** A subscription is an event that is cleared when the waiter wakes, so
  one notification costs each waiter exactly one re-read, and a waiter with nothing new sleeps
  (a resolved future that stays resolved would make it re-read back to back).
- **Shared reads.** Waiters of one key that all read the same thing (a batch's counters) may share one
  read, provided it started after the key's latest notification arrived (so it sees that change):
  fifty clients watching one batch cost one query per notification, not fifty.
- **Health-checked, reconnecting.** A background task pings the LISTEN connection; when it is lost,
  every waiter is woken once (a notification may have been missed while it was down) and, until the
  connection is back, waiters re-read at a slow fixed pace instead of trusting a dead channel.

Nothing depends on delivery for correctness: on timeout the caller has the last state it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from shared.db.authorities import NOTIFY_CHANNEL

log = logging.getLogger("kms.api")
T = TypeVar("T")

# While the LISTEN connection is down, waiters re-read this often (bounded load, still correct).
FALLBACK_POLL_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 5.0
RECONNECT_SECONDS = 1.0


class Subscription:
    """Woken by each notification of its key; ``wait`` clears it again (re-armed)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when woken within ``seconds`` (and re-armed), False on timeout."""
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Notifications:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self._watchdog: asyncio.Task[None] | None = None
        # Per key: when its latest notification arrived, and the shared read in flight (with its start).
        self._notified_at: dict[str, float] = {}
        self._flights: dict[str, tuple[float, asyncio.Future[Any]]] = {}
        # Callbacks for every payload with a prefix (the token cache's ``identity:``), and for a gap: the
        # LISTEN connection dropped, so notifications may have been missed.
        self._prefix_listeners: list[tuple[str, Callable[[str], None]]] = []
        self._gap_listeners: list[Callable[[], None]] = []

    def on_prefix(self, prefix: str, callback: Callable[[str], None]) -> None:
        self._prefix_listeners.append((prefix, callback))

    def on_gap(self, callback: Callable[[], None]) -> None:
        self._gap_listeners.append(callback)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect (best effort: the watchdog keeps trying) and start the health check."""
        await self._connect()
        self._watchdog = asyncio.create_task(self._watch(), name="kms-listen-watchdog")

    async def _connect(self) -> bool:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("LISTEN unavailable; long-polls re-read every second until it is back",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            return False
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        # Anything may have happened while we were not listening: everybody re-reads once.
        self._wake_all()
        return True

    async def _watch(self) -> None:
        while True:
            if not self.listening:
                if not await self._connect():
                    await asyncio.sleep(RECONNECT_SECONDS)
                continue
            await asyncio.sleep(HEALTH_CHECK_SECONDS)
            conn = self._conn
            if conn is None or conn.is_closed():
                continue
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), HEALTH_CHECK_SECONDS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("LISTEN connection failed its health check; reconnecting",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
                self._drop(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.terminate()
        self._wake_all()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        for prefix, callback in self._prefix_listeners:
            if payload.startswith(prefix):
                callback(payload[len(prefix):])
        subs = self._subscriptions.get(payload)
        if not subs:
            return
        self._notified_at[payload] = asyncio.get_running_loop().time()
        for sub in subs:
            sub.wake()

    def _on_terminated(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
        self._wake_all()

    def _wake_all(self) -> None:
        for callback in self._gap_listeners:
            callback()
        now = asyncio.get_running_loop().time()
        for key, subs in self._subscriptions.items():
            self._notified_at[key] = now
            for sub in subs:
                sub.wake()

    @contextlib.asynccontextmanager
    async def subscription(self, key: str) -> AsyncIterator[Subscription]:
        sub = Subscription(key)
        self._subscriptions[key].add(sub)
        try:
            yield sub
        finally:
            subs = self._subscriptions.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscriptions[key]
                    self._notified_at.pop(key, None)

    async def _shared_read(self, key: str, read: Callable[[], Awaitable[T]]) -> T:
        """One read for every waiter of ``key`` that asks while it runs, if it began after the key's
        latest notification; else a new one (which later askers may join)."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None or flight[0] < self._notified_at.get(key, 0.0) or flight[1].done():
            future: asyncio.Future[Any] = asyncio.ensure_future(read())
            flight = (loop.time(), future)
            self._flights[key] = flight

            def forget(done: asyncio.Future[Any], key: str = key) -> None:
                if self._flights.get(key, (0.0, None))[1] is done:
                    del self._flights[key]
                if not done.cancelled():
                    done.exception()  # retrieved: a failed read is raised to each waiter, not logged unseen

            future.add_done_callback(forget)
        result: T = await asyncio.shield(flight[1])
        return result

    async def wait_for(self, key: str, read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                       seconds: float, *, shared: bool = False) -> T:
        """Read the state behind ``key`` until ``done(state)`` or ``seconds`` pass; re-read only when
        notified (or, while LISTEN is down, once a second). Returns the last state read. With
        ``shared``, waiters whose ``read`` is the same for everybody share each read."""
        if shared:
            def reader() -> Awaitable[T]:
                return self._shared_read(key, read)
            return await self.wait_for(key, reader, done, seconds)
        if seconds <= 0:
            return await read()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        async with self.subscription(key) as sub:
            state = await read()
            while not done(state):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if self.listening:
                    if not await sub.wait(remaining):
                        break  # nothing changed: the state read last is still the answer
                else:
                    await sub.wait(min(remaining, FALLBACK_POLL_SECONDS))
                state = await read()
        return state

    def waiters(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
