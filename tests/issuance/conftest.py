"""Fixtures of the issuance tests: an API whose broker is unreachable, and a way to ring the real one.

A request submitted through ``api_without_broker`` is stored ``pending`` in the session's database, but
its task message never reaches a worker (the API logs the failed send and answers 202: DESIGN.md 4.1).
A test can then change the world (tighten a policy, disable a CA) and only afterwards send the task to
the real broker, as the reconciler would, to watch the worker decide against the state of that moment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from api.broker import Broker
from shared import tasks
from tests.stack import Stack

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
