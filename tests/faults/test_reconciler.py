"""Nothing ends silently (DESIGN.md invariant 7): a request that keeps being claimed without finishing is
given up by the reconciler, with a reason the client can read."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from shared.config import Settings
from tests.faults.harness import (
    flush_broker,
    ledger,
    project_with_pki,
    request_view,
    start_worker_and_beat,
    submit,
    wait_all_final,
    wait_until_queued,
)
from tests.stack import Stack

pytestmark = pytest.mark.slow


async def test_a_request_claimed_max_attempts_times_without_finishing_ends_failed_with_gave_up_reason(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    (request_id,) = await submit(project.admin, project.pki.profile_id, 1)
    await wait_until_queued(stack, [request_id])
    flush_broker(stack)  # only the reconciler may find it: a worker given the message would just issue it

    # The state a request is left in after its last allowed claim: processing, lease run out (its worker
    # died), the last transient error recorded.
    max_attempts = int(stack.env.get("KMS_MAX_ATTEMPTS", Settings().max_attempts))  # what the worker reads
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            "UPDATE certificate_requests SET status = 'processing', claim_token = gen_random_uuid(),"
            " attempts = $2, lease_expires_at = now() - interval '1 minute',"
            " last_error = 'ConnectionDoesNotExistError: connection was closed',"
            " updated_at = now() - interval '1 minute' WHERE id = $1", request_id, max_attempts)
    finally:
        await conn.close()

    await start_worker_and_beat(stack)
    await wait_all_final(stack.database_url, 1, timeout=30)

    view = await request_view(project.admin, request_id)
    assert view["status"] == "failed", view
    assert "gave up" in view["errorMessage"], view
    assert f"{max_attempts} attempts" in view["errorMessage"]
    assert "ConnectionDoesNotExistError" in view["errorMessage"]  # the last error, for whoever reads it
    assert view["certificate"] is None
    assert (await ledger(stack.database_url)).certificates == 0
    conn = await asyncpg.connect(stack.database_url)
    try:
        abandoned = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'certificate.sign.abandoned' AND subject_id = $1",
            request_id)
    finally:
        await conn.close()
    assert abandoned == 1
