"""Fixtures shared by every test: one real stack per test session (fresh database, private Redis
database number, the API on a free port, a Celery worker subprocess), dropped at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import asyncpg
import pytest

from api.broker import Broker
from shared import tasks
from tests.api_client import ApiClient, Tenant, new_tenant
from tests.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack(name="test")
    s.create_database()
    try:
        yield s
    finally:
        s.drop()


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    return stack.api_url or stack.start_api()


@pytest.fixture(scope="session")
def worker(stack: Stack, api_url: str) -> Stack:
    if "worker" not in stack.processes:
        # With the API's URL as KMS_PUBLIC_URL, every certificate the session issues carries a CRL
        # distribution point and AIA caIssuers URL that really serve (DESIGN.md 5.7).
        stack.start_worker(env={"KMS_PUBLIC_URL": api_url})
    return stack


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as session:
        yield ApiClient(session, api_url)


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        yield conn
    finally:
        await conn.close()


def bootstrap(stack: Stack, project: str) -> dict[str, str]:
    """Runs the real `kms-pki admin bootstrap --json` command, as a user would."""
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "admin", "bootstrap", "--project", project, "--json"],
        env=stack.env, capture_output=True, check=True, timeout=60,
    )
    creds: dict[str, str] = json.loads(out.stdout)
    return creds


@pytest.fixture
async def make_tenant(stack: Stack, http: ApiClient):  # type: ignore[no-untyped-def]
    """A new project with a logged-in admin (created in-process: the CLI has its own test)."""
    async def make(name: str = "tenant") -> Tenant:
        return await new_tenant(stack.database_url, http, name)
    return make


@pytest.fixture
async def tenant(make_tenant) -> Tenant:  # type: ignore[no-untyped-def]
    t: Tenant = await make_tenant("alpha")
    return t


# An API whose broker is unreachable: a request submitted through it is stored ``pending`` in the session's
# database, but its task message never reaches a worker (the API logs the failed send and answers 202:
# DESIGN.md 4.1). A test can then change the world (tighten a policy, disable a CA) and only afterwards
# send the task to the real broker, as the reconciler would, to watch the worker decide against the state
# of that moment. Defined here, once: imported into several conftests, each import was a session fixture of
# its own, all starting an API under one process name, and all but the last were left running.
#
# Nothing listens on port 1 of the loopback interface: every send fails at once with "connection refused".
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="session")
def api_without_broker(worker: Stack) -> Iterator[str]:
    name = "api-without-broker"
    url = worker.start_api(name=name, env={"KMS_BROKER_URL": UNREACHABLE_BROKER})
    try:
        yield url
    finally:
        worker.stop(name)


@pytest.fixture
def ring_doorbell(worker: Stack) -> Callable[[str], Awaitable[None]]:
    """Sends ``issue_certificate(request_id)`` to the session's real broker, as the reconciler does."""
    async def ring(request_id: str) -> None:
        broker = Broker(worker.broker_url)
        try:
            await broker.send(tasks.ISSUE_CERTIFICATE, [request_id])
        finally:
            await broker.close()
    return ring
