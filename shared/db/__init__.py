"""All SQL of the service lives in this package, as named functions with typed results."""

from __future__ import annotations

from typing import Any, Protocol


class Executor(Protocol):
    """What a query function needs: an asyncpg ``Connection`` or ``Pool`` (both fit)."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any: ...
