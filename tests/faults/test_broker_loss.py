"""PostgreSQL is the truth; the broker is a doorbell (DESIGN.md invariant 1): requests whose messages were
lost (flushed, or gone with a Redis restart), or never sent because the broker was down, are completed by
the reconciler. Each test has a Redis server of its own, so flushing or restarting it disturbs no other."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.api_client import ApiClient
from tests.faults.harness import (
    assert_exactly_one_certificate_per_issued_request,
    broker_of,
    flush_broker,
    issue_body,
    ledger,
    project_with_pki,
    queued_request_ids,
    request_view,
    start_api_without_broker,
    start_worker_and_beat,
    submit,
    supervise,
    wait_all_final,
    wait_for_log,
    wait_until_issued_between,
    wait_until_queued,
)
from tests.pki_setup import ISSUE
from tests.stack import Stack

pytestmark = pytest.mark.slow


async def test_requests_whose_messages_were_flushed_from_redis_are_all_issued_by_the_reconciler(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    ids = await submit(project.admin, project.pki.profile_id, 100)
    await wait_until_queued(stack, ids)

    flush_broker(stack)  # every message gone (FLUSHDB of this stack's own Redis)
    assert queued_request_ids(stack) == []

    await start_worker_and_beat(stack)
    final = await wait_all_final(stack.database_url, 100, timeout=30)

    book = await ledger(stack.database_url)
    assert final == {"issued": 100}
    assert book.certificates == 100
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def test_a_redis_restart_mid_run_loses_no_request_and_signs_none_twice(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)
    await start_worker_and_beat(stack)
    submitting = asyncio.create_task(submit(project.admin, project.pki.profile_id, 200))
    await wait_until_issued_between(stack.database_url, 10, 200, timeout=60)
    # Redis keeps nothing on disk (DESIGN.md 8): a restart drops every connection and every message,
    # queued, prefetched and unacknowledged alike, while the API is still ringing and the worker working.
    broker_of(stack).restart()
    # Celery's worker usually reconnects; sometimes it dies instead ("Unrecoverable error" while restoring
    # its unacknowledged messages over the lost connection), and a supervisor must start it again.
    supervisor = asyncio.create_task(supervise(stack, ["worker-2", "beat"]))
    try:
        ids = await submitting
        final = await wait_all_final(stack.database_url, 200, timeout=60)
    finally:
        supervisor.cancel()
        restarted = await supervisor

    book = await ledger(stack.database_url)
    assert final == {"issued": 200}, (dict(final), restarted)
    assert book.certificates == 200
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def test_a_request_submitted_while_the_broker_is_unreachable_is_accepted_and_later_issued(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    offline = ApiClient(session, await asyncio.to_thread(start_api_without_broker, stack), project.admin.token)

    started = time.monotonic()
    reply = await offline.post(ISSUE, issue_body(project.pki.profile_id, 0))
    answered_in = time.monotonic() - started
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "pending"
    assert answered_in < 10, f"the POST waited {answered_in:.1f}s on the dead broker"
    request_id = reply.body["certificateRequestId"]
    await wait_for_log(stack, "api-no-broker", "enqueue failed")  # logged, not fatal to the request
    assert queued_request_ids(stack) == []  # no doorbell anywhere

    await start_worker_and_beat(stack)
    await wait_all_final(stack.database_url, 1, timeout=30)

    view = await request_view(project.admin, request_id)
    assert view["status"] == "issued", view
    assert view["certificate"] and view["serialNumber"]
    book = await ledger(stack.database_url)
    assert book.certificates == 1
    assert_exactly_one_certificate_per_issued_request(book, [request_id])
