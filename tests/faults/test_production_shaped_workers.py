"""The stack started the ways users start it (issue 8, item 6): a plain ``celery -A worker.app worker`` that
names no queue, and ``kms-pki beat``. The reconciler must reach that worker, and must not wait behind a
backlog of signing work, so that whatever the broker loses is still issued."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis

from tests.faults.harness import (
    assert_exactly_one_certificate_per_issued_request,
    ledger,
    project_with_pki,
    queued_request_ids,
    submit,
    wait_all_final,
    wait_until_queued,
)
from tests.stack import Stack

pytestmark = pytest.mark.slow


async def test_flushall_with_100_queued_requests_ends_with_100_issued_by_a_plain_celery_worker_and_beat(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    ids = await submit(project.admin, project.pki.profile_id, 100)
    await wait_until_queued(stack, ids)

    # The stack's Redis server is its own (tests.faults.harness.PrivateRedis): FLUSHALL touches nobody else.
    client = redis.Redis.from_url(stack.broker_url)
    try:
        client.flushall()
    finally:
        client.close()
    assert queued_request_ids(stack) == []

    stack.start_beat()  # `kms-pki beat`
    await asyncio.to_thread(stack.start_worker, name="plain", plain_celery=True)  # no -Q: every queue
    final = await wait_all_final(stack.database_url, 100, timeout=60)

    book = await ledger(stack.database_url)
    assert final == {"issued": 100}
    assert_exactly_one_certificate_per_issued_request(book, ids)
    log = stack.log_path("plain").read_text(errors="replace")
    assert "kms.reconcile" in log, "the reconciler's task never ran on the plain worker"
