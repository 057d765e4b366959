"""The API's side of the broker: send tasks by name and check the broker is reachable.

The broker is only a doorbell (DESIGN.md invariant 1): PostgreSQL holds every request, and the
reconciler re-enqueues what the broker loses, so a failed send is logged, not fatal to the request.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from shared.tasks import celery_config


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self._celery = Celery("kms-api", set_as_current=False)
        self._celery.conf.update(celery_config(url))
        # kombu publishes synchronously; one thread keeps that off the event loop and keeps order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kms-broker")
        self._redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2) \
            if url.startswith(("redis://", "rediss://", "unix://")) else None

    async def send(self, name: str, args: list[Any], queue: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, lambda: self._celery.send_task(name, args=args, queue=queue)
        )

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
        if self._redis is not None:
            await self._redis.aclose()
        self._executor.shutdown(wait=False)
