"""Scale out (issue 11): more API processes and more workers against one PostgreSQL and one broker. Two
API processes sharing one port (SO_REUSEPORT) take requests; three worker processes compete for the
doorbell's ready claims, for the reconciler's re-sends (beat runs) and for duplicated chunk messages;
every request ends issued with exactly one certificate."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from api.broker import Broker
from shared.tasks import ISSUE_BATCH_CHUNK
from tests.api_client import ApiClient
from tests.faults.harness import (
    assert_exactly_one_certificate_per_issued_request,
    ledger,
    project_with_pki,
    submit,
    wait_all_final,
)
from tests.stack import Stack, free_port

pytestmark = pytest.mark.slow
REQUESTS = 400


async def test_three_workers_and_two_api_processes_on_one_port_issue_every_request_exactly_once(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # its own API; the workers come below
    port = free_port()
    env = {"KMS_API_REUSE_PORT": "true"}
    urls = await asyncio.gather(*(asyncio.to_thread(stack.start_api, port=port, name=f"api-shared-{n}", env=env)
                                  for n in range(2)))
    assert urls[0] == urls[1]  # both listening on one port, both healthy (start_api waits for /healthz)
    shared = ApiClient(session, urls[0], project.admin.token)
    await asyncio.gather(*(asyncio.to_thread(stack.start_worker, name=f"worker-{n}") for n in range(3)))
    stack.start_beat()
    ids: list[str] = []
    for _ in range(4):  # in waves, so that the workers are busy while more arrive
        ids += await submit(shared, project.pki.profile_id, REQUESTS // 4)
        # Every chunk message delivered again: the duplicates race the originals across the workers.
        broker = Broker(stack.broker_url)
        try:
            await broker.send(ISSUE_BATCH_CHUNK, [ids[-REQUESTS // 4:]])
        finally:
            await broker.close()
    final = await wait_all_final(stack.database_url, REQUESTS, timeout=120)
    assert final["issued"] == REQUESTS, dict(final)
    book = await ledger(stack.database_url)
    assert_exactly_one_certificate_per_issued_request(book, ids)
    # The second API process could bind the port only through SO_REUSEPORT (asserted above); all three
    # workers signed.
    signed_by = [n for n in range(3) if '"chunk issued"' in stack.log_path(f"worker-{n}").read_text(errors="replace")]
    assert signed_by == [0, 1, 2], signed_by
