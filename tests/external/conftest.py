"""Fixtures of the external-CA tests: one world for the module's ordinary flows (its own stack: database,
Redis database number, API, worker and beat with the external settings of tests, and pebble + bind9 on
loopback). The fault tests make a world of their own per test (tests/external/test_faults.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.api_client import Tenant, open_tenant
from tests.external.upstream import ensure_installed
from tests.external.world import EXTERNAL_TIMINGS, Upstream, api_port, start_upstream
from tests.stack import Stack


@dataclass
class World:
    stack: Stack
    upstream: Upstream


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    ensure_installed()
    stack = Stack(name="ext", extra_env={**EXTERNAL_TIMINGS, "KMS_RECONCILE_AFTER_SECONDS": "3",
                                         "KMS_RECONCILE_INTERVAL_SECONDS": "1", "KMS_RENEWAL_INTERVAL_SECONDS": "1"})
    stack.create_database()
    try:
        stack.start_api()
        upstream = start_upstream(stack.dir, api_port(stack))
        try:
            stack.env["KMS_PUBLIC_URL"] = stack.api_url
            stack.start_worker(concurrency=2)
            stack.start_beat()
            yield World(stack, upstream)
        finally:
            upstream.stop()
    finally:
        stack.drop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def ext_tenant(world: World, session: aiohttp.ClientSession) -> Tenant:
    return await open_tenant(world.stack, session, f"ext-{secrets.token_hex(4)}")
