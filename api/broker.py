"""The API's side of the broker: send tasks by name and check the broker is reachable.

The broker is only a doorbell (DESIGN.md invariant 1): PostgreSQL holds every request, and the
reconciler re-enqueues what the broker loses, so a failed send is logged, not fatal to the request.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from shared.tasks import (
    DOORBELL_HOLD_MS,
    DOORBELL_KEY,
    ISSUE_BATCH_CHUNK,
    OBTAIN_EXTERNAL,
    celery_config,
    is_redis,
    ready_channel,
)

log = logging.getLogger("kms.api")
# Rings at most this often (those in between are gathered into the next one), and the most one carries.
COALESCE_SECONDS = 0.002
CHUNK_MAX = 50


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self._celery = Celery("kms-api", set_as_current=False)
        self._celery.conf.update(celery_config(url))
        # kombu publishes synchronously; one thread keeps that off the event loop and keeps order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kms-broker")
        self._redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2) if is_redis(url) else None
        self._ready_channel = ready_channel(url) if self._redis is not None else ""
        self._pending_ids: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        self._in_flight: set[asyncio.Future[None]] = set()

    async def send(self, name: str, args: list[Any], queue: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, lambda: self._celery.send_task(name, args=args, queue=queue)
        )

    async def send_best_effort(self, name: str, args: list[Any]) -> bool:
        """``send`` for work already committed to the database: a failure is logged, never raised, because
        the reconciler re-sends whatever stays pending (and a client told 503 would retry, doubling it)."""
        try:
            await self.send(name, args)
        except Exception as exc:  # the rows are the truth (DESIGN.md 4.1)
            log.warning("enqueue failed; the reconciler will re-send", extra={
                "task": name, "error": f"{type(exc).__name__}: {exc}"})
            return False
        return True

    async def enqueue(self, request_id: str, issuer_kind: str) -> None:
        """A new request to its workers: an external CA's has a task of its own on kms.external (one
        upstream order each), never the signers' doorbell; the reconciler re-sends either if lost."""
        if issuer_kind == "external":
            await self.send_best_effort(OBTAIN_EXTERNAL, [request_id])
        else:
            self.ring(request_id)

    def ring(self, request_id: str) -> None:
        """Ask for one request to be issued. Requests arriving within a few milliseconds of each other
        share one chunk message (ids only): one broker round trip, one claim and one transaction in the
        worker for the lot, instead of one of each per request. Never raises: a message that cannot be
        sent is logged, and the reconciler re-sends what stays pending."""
        self._pending_ids.append(request_id)
        if len(self._pending_ids) >= CHUNK_MAX:
            self._flush()
        elif self._flush_handle is None:
            # The first ring after a quiet spell goes at once (a lone request waits for nothing); rings within
            # COALESCE_SECONDS of the last one are gathered and go together when that time is up.
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_at(max(loop.time(), self._last_flush + COALESCE_SECONDS), self._flush)

    def _flush(self) -> None:
        self._last_flush = asyncio.get_running_loop().time()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        ids, self._pending_ids = self._pending_ids, []
        if ids:
            task = asyncio.ensure_future(self._send_chunk(ids))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send_chunk(self, ids: list[str]) -> None:
        if self._redis is not None:
            # The fast doorbell (worker.ready_listener): a worker process that hears it claims these at
            # once. PUBLISH says how many heard; none (every worker down, or listeners off) falls back to
            # the doorbell message, which waits on the broker for a worker.
            try:
                heard = await self._redis.publish(self._ready_channel, b"")
            except Exception:  # Redis trouble: the message below (likely failing too, and logged)
                heard = 0
            if heard:
                return
            try:
                rang = await self._redis.set(DOORBELL_KEY, b"1", nx=True, px=DOORBELL_HOLD_MS)
            except Exception:  # Redis trouble: ring anyway (a spare message costs little)
                rang = True
            if not rang:
                return  # a doorbell chunk is on its way: its worker claims these requests too
        await self.send_best_effort(ISSUE_BATCH_CHUNK, [ids, None, True])

    async def ping(self, limit: float = 2.0) -> None:
        """Raises if the broker cannot be reached within ``limit`` seconds."""
        if self._redis is not None:
            await asyncio.wait_for(self._redis.ping(), limit)
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=limit)

        await asyncio.wait_for(loop.run_in_executor(None, check), limit + 1)

    async def close(self) -> None:
        self._flush()
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=5)
        if self._redis is not None:
            await self._redis.aclose()
        self._executor.shutdown(wait=False)
