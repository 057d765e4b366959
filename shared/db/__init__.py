"""All SQL of the service lives in this package, as named functions with typed results."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg


class Executor(Protocol):
    """What a query function needs: an asyncpg ``Connection`` or ``Pool`` (both fit)."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any: ...


async def fetch_planned(executor: Executor, query: str, *args: Any) -> list[Any]:
    """``fetch``, with a plan PostgreSQL makes for these very arguments, on every call.

    ``fetch`` itself prepares a statement once per connection (asyncpg's statement cache), and PostgreSQL
    plans a prepared statement for its arguments five times, then may keep one generic plan made without
    them for the rest of the connection's life. For a substring search that is wrong: how many rows a
    pattern matches, and whether a trigram index can serve it at all (not for fewer than 3 characters),
    depends on the pattern. Seen with 200,000 stored: after a few searches that match most rows, the
    generic plan took over and read every request for each search (36 ms instead of 5 for a rare name).
    Run as PostgreSQL's unnamed statement, the query is parsed and planned anew each time (one more
    round trip; the planning is what a custom plan costs anyway)."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn:
            return await fetch_planned(conn, query, *args)
    statement = await executor.prepare(query, name="")  # type: ignore[attr-defined]
    return list(await statement.fetch(*args))
