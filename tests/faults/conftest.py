"""Fixtures of the fault tests: a stack per test (nothing killed or flushed here reaches another test) and
an HTTP session. The session-wide stack of ``tests/conftest.py`` is never used here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.faults.harness import fault_stack as new_fault_stack
from tests.stack import Stack


@pytest.fixture
def fault_stack() -> Iterator[Stack]:
    """Its own database and Redis server; the test starts the API, workers and beat."""
    with new_fault_stack() as stack:
        yield stack


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
