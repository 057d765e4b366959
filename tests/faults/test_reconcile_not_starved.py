"""The reconciler does not wait behind a backlog of signing work (issue 8, item 6): with the only worker busy
on a long queue of slow chunks (RSA-4096 server keys), the reconcile task runs within seconds, long
before the backlog drains (it rides its own queue, and a worker reserves one message at a time), and a
request whose message was lost is issued."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import asyncpg
import pytest

from tests.api_client import ApiClient
from tests.batches.batching import BATCHES
from tests.faults.harness import issue_body, project_with_pki, queued_request_ids, start_api_without_broker
from tests.pki_setup import ISSUE
from tests.stack import Stack

pytestmark = pytest.mark.slow
SLOW_CHUNKS = 12


async def test_a_lost_request_is_issued_while_a_backlog_of_slow_chunks_still_waits(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)
    for n in range(SLOW_CHUNKS):  # one chunk message each, about 3 RSA-4096 key generations of work
        items = [{"attributes": {"commonName": f"slow-{n}-{i}.example.test", "keyAlgorithm": "RSA_4096",
                                 "altNames": [{"type": "dns_name", "value": f"slow-{n}-{i}.example.test"}]}}
                 for i in range(3)]
        r = await project.admin.post(BATCHES, {"profileId": project.pki.profile_id, "items": items})
        assert r.status == 202, r.body
    deaf = ApiClient(session, await asyncio.to_thread(start_api_without_broker, stack), project.admin.token)
    lost = await deaf.post(ISSUE, issue_body(project.pki.profile_id, 0))
    assert lost.status == 202, lost.body
    lost_id = lost.body["certificateRequestId"]
    assert lost_id not in queued_request_ids(stack)  # no message: only the reconciler can bring it back

    stack.start_beat()
    await asyncio.to_thread(stack.start_worker, name="only", concurrency=1, plain_celery=True)
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = time.monotonic() + 180
        while await conn.fetchval("SELECT status FROM certificate_requests WHERE id = $1::uuid", lost_id) != "issued":
            assert time.monotonic() < deadline, "the lost request was never issued"
            await asyncio.sleep(0.5)
    finally:
        await conn.close()

    events = [json.loads(line) for line in stack.log_path("only").read_text().splitlines() if line.startswith("{")]
    reconciled = [e["ts"] for e in events if e.get("msg", "").startswith("Task kms.reconcile[")
                  and "succeeded" in e.get("msg", "")]
    backlog = [e["ts"] for e in events if e.get("msg") == "chunk issued" and e.get("issued") and e.get("batch_id")]
    assert reconciled, "the reconcile task never ran"
    assert len(backlog) >= 2
    # It ran while the backlog was still being signed, not after it drained (ISO timestamps of one clock
    # compare as strings). Comparing with the second chunk instead raced: a chunk takes about a second.
    assert reconciled[0] < max(backlog), (reconciled[0], backlog)
