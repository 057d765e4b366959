"""The asyncpg pool: JSON/JSONB columns decode to Python objects on every connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


def _encode_jsonb(value: object) -> bytes:
    return b"\x01" + json.dumps(value).encode()  # jsonb's binary format: a version byte, then the text


def _decode_jsonb(data: bytes) -> object:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    # Binary, so that COPY (bulk batch inserts) can carry jsonb columns too.
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog",
                              format="binary")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool connections carry no session state (no LISTEN, advisory lock or SET: those use dedicated
    connections), so the default reset, one more round trip on every release, is skipped. asyncpg still
    rolls back a transaction left open on the connection before this runs."""


# asyncpg ships no type hints, so its Pool is Any to mypy.
class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """A pool whose every acquire (``pool.fetch*`` and ``pool.acquire()`` alike) gives up after a bounded
    wait with ``TimeoutError``, which the API answers 503 + Retry-After and a worker retries: under
    saturation a caller is told to come back instead of queueing forever."""

    acquire_timeout: float = 5.0

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, acquire_timeout: float = 5.0
                      ) -> asyncpg.Pool:
    pool = BoundedPool(
        dsn, min_size=min_size, max_size=max_size, max_queries=50000, loop=None, connection_class=asyncpg.Connection,
        record_class=asyncpg.Record, init=_init_connection, command_timeout=30, reset=_no_reset,
        # A connection that sat unused is recycled, so a restarted server is picked up quietly.
        max_inactive_connection_lifetime=60,
    )
    pool.acquire_timeout = acquire_timeout
    await pool
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


@asynccontextmanager
async def dedicated(dsn: str, *, connect_timeout: float = 60) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, outside any pool and any caller's transaction (autocommit), closed after."""
    conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    try:
        yield conn
    finally:
        await conn.close()


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=3) as conn:
        await conn.fetchval("SELECT 1")
