"""The fast doorbell (worker.ready_listener, issue 11): every pool process listens on a Redis channel and
claims new ready requests itself, without a Celery message; when nobody listens, the API falls back to
the doorbell message, so no request is left to a channel nobody hears."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import redis

from api.broker import COALESCE_SECONDS, Broker
from shared.tasks import DOORBELL_KEY, ISSUE_BATCH_CHUNK, ready_channel
from tests.api_client import ApiClient
from tests.faults.harness import (
    assert_exactly_one_certificate_per_issued_request,
    ledger,
    project_with_pki,
    queued_request_ids,
    submit,
    wait_all_final,
)
from tests.stack import Stack

CHANNEL = ready_channel("redis://127.0.0.1/0")  # a fault stack's private Redis: database 0


def _subscribers(stack: Stack) -> dict[bytes, int]:
    client = redis.Redis.from_url(stack.broker_url)
    try:
        channels = client.pubsub_channels()
        return dict(client.pubsub_numsub(*channels)) if channels else {}
    finally:
        client.close()


async def _wait_subscribers(stack: Stack, count: int, timeout: float = 20) -> dict[bytes, int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = _subscribers(stack)
        if seen.get(CHANNEL.encode(), 0) == count or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def test_pool_processes_claim_what_the_api_publishes_with_the_celery_consumer_stopped(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)
    admin = ApiClient(session, stack.api_url, project.admin.token)
    worker = stack.start_worker(name="listening", concurrency=2)
    # One subscriber per pool process, on the channel of this Redis database only.
    assert await _wait_subscribers(stack, 2) == {CHANNEL.encode(): 2}

    # The worker's main process (the Celery consumer, which alone reads broker messages) is stopped: only
    # the pool processes' listeners can issue now.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        ids = await submit(admin, project.pki.profile_id, 40)
        final = await wait_all_final(stack.database_url, 40, timeout=30)
        assert final["issued"] == 40, dict(final)
        # Heard, so the API sent no doorbell message, and set no doorbell key.
        assert queued_request_ids(stack) == []
        client = redis.Redis.from_url(stack.broker_url)
        try:
            assert not client.exists(DOORBELL_KEY)
        finally:
            client.close()
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    book = await ledger(stack.database_url)
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def test_with_no_process_listening_the_api_sends_the_doorbell_message(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)
    admin = ApiClient(session, stack.api_url, project.admin.token)
    stack.start_worker(name="deaf", concurrency=2, env={"KMS_READY_LISTENER": "false"})
    await asyncio.sleep(1)  # time in which listeners, if any had started, would have subscribed
    assert _subscribers(stack).get(CHANNEL.encode(), 0) == 0

    ids = await submit(admin, project.pki.profile_id, 20)
    final = await wait_all_final(stack.database_url, 20, timeout=30)
    assert final["issued"] == 20, dict(final)
    assert_exactly_one_certificate_per_issued_request(await ledger(stack.database_url), ids)
    # They came by the doorbell message (Celery's log names each task it receives).
    assert f"{ISSUE_BATCH_CHUNK}[" in stack.log_path("deaf").read_text(errors="replace")


async def test_a_request_made_while_every_worker_is_down_waits_on_the_broker_for_the_first_to_start(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # no worker runs after this
    admin = ApiClient(session, stack.api_url, project.admin.token)
    ids = await submit(admin, project.pki.profile_id, 10)
    deadline = time.monotonic() + 10
    while not queued_request_ids(stack) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert queued_request_ids(stack), "nobody heard the ring, so a doorbell message must wait on the broker"

    stack.start_worker(name="late", concurrency=2)  # no beat: only the waiting message can bring them
    final = await wait_all_final(stack.database_url, 10, timeout=30)
    assert final["issued"] == 10, dict(final)
    assert_exactly_one_certificate_per_issued_request(await ledger(stack.database_url), ids)


async def test_the_api_rings_once_for_a_burst_and_at_once_after_a_quiet_spell(fault_stack: Stack) -> None:
    """api.broker's coalescing, on a real Redis: requests registered in one turn of the event loop share
    one PUBLISH; a ring after a quiet spell goes out without waiting for others."""
    listener = redis.Redis.from_url(fault_stack.broker_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(CHANNEL)
    broker = Broker(fault_stack.broker_url)

    def heard() -> int:
        """Rings heard in the next half second (a subscription's confirmation reads as None)."""
        count = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            count += pubsub.get_message(timeout=0.05) is not None
        return count

    try:
        for n in range(30):  # one burst, in one turn of the loop
            broker.ring(f"burst-{n}")
        await asyncio.sleep(0.2)
        assert heard() == 1
        await asyncio.sleep(COALESCE_SECONDS * 5)  # quiet
        broker.ring("lone")
        for _ in range(3):  # a few turns of the loop, far less than the coalescing window on any machine
            await asyncio.sleep(0)
        assert broker._pending_ids == []  # sent at once, not held for others to join
        await asyncio.sleep(0.2)  # (heard() blocks the loop: let the PUBLISH go out first)
        assert heard() == 1
    finally:
        await broker.close()
        pubsub.close()
        listener.close()
