"""At most one certificate per request (DESIGN.md invariant 2), and every request still ends (invariant 7),
when a worker dies mid-run or a task is delivered more than once. Real worker processes, real broker,
real database; the only thing faked is the fault."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from uuid import UUID

import aiohttp
import pytest
from celery import Celery

from shared.config import Settings
from shared.tasks import ISSUE_CERTIFICATE, celery_config
from tests.api_client import ApiClient
from tests.faults.harness import (
    assert_exactly_one_certificate_per_issued_request,
    ledger,
    project_with_pki,
    queued_request_ids,
    start_api_without_broker,
    start_worker_and_beat,
    statuses,
    submit,
    task_outcomes,
    wait_all_final,
    wait_until_issued_between,
    wait_until_queued,
)
from tests.stack import Stack
from worker.ca_keys import CaKeyCache
from worker.issuance import issue, issue_many
from worker.runtime import Runtime

pytestmark = pytest.mark.slow


async def test_worker_killed_with_sigkill_mid_run_leaves_every_request_issued_exactly_once(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # the API up, no worker
    # Queue all 200 first, so the kill lands while the worker holds some of them: running (claimed,
    # lease taken) and prefetched (acks_late: delivered, not yet acknowledged).
    ids = await submit(project.admin, project.pki.profile_id, 200)
    await wait_until_queued(stack, ids)

    starting = asyncio.create_task(asyncio.to_thread(stack.start_worker, name="doomed"))
    at_kill = await wait_until_issued_between(stack.database_url, 10, 200, timeout=60)
    # SIGKILL to the process group at once (the pool children die with it; nothing is acknowledged),
    # whether or not the worker has logged "ready" yet: it is already working.
    os.killpg(stack.processes["doomed"].pid, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):  # start_worker's "exited early", if it was still waiting
        await starting
    stack.kill("doomed")  # reaps it
    after_kill = await statuses(stack.database_url)
    assert after_kill["issued"] < 200, f"the kill came too late to matter: {dict(after_kill)}"

    # What the dead worker held comes back through the reconciler (a pending request with no progress, a
    # processing one past its lease); Redis would only redeliver its unacked messages after the visibility
    # timeout. Duplicates of either kind are harmless: the claim lets one worker through.
    await start_worker_and_beat(stack)
    final = await wait_all_final(stack.database_url, 200, timeout=60)

    book = await ledger(stack.database_url)
    assert final == {"issued": 200}, (dict(at_kill), dict(after_kill), dict(final))
    assert book.certificates == 200
    assert_exactly_one_certificate_per_issued_request(book, ids)


def _runtime(stack: Stack) -> Runtime:
    """The worker's runtime, in this process, against the stack's database and root keys."""
    return Runtime(Settings(database_url=stack.database_url, root_key=None, root_key_file=stack.root_key_file,
                            ca_root_key=None, ca_root_key_file=stack.ca_root_key_file))


async def test_the_same_request_issued_twice_at_once_signs_once_and_the_other_run_skips(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # no worker: only the in-process runs below issue
    ids = await submit(project.admin, project.pki.profile_id, 20)

    # The plain function the Celery task wraps, run twice per request concurrently, as two workers given
    # the same message would.
    rt = _runtime(stack)
    cache = CaKeyCache(rt.ca_keyring, 60)
    try:
        outcomes = await asyncio.gather(*(issue(rt, cache, UUID(rid)) for rid in ids for _ in range(2)))
        late = await issue(rt, cache, UUID(ids[0]))  # a third delivery, after the fact
    finally:
        await (await rt.pool()).close()

    assert [sorted(outcomes[i:i + 2]) for i in range(0, len(outcomes), 2)] == [["issued", "skipped"]] * 20
    assert late == "skipped"
    book = await ledger(stack.database_url)
    assert book.counts == {"issued": 20}
    assert book.certificates == 20
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def test_requests_in_two_chunks_and_sent_alone_at_the_same_time_are_each_signed_once(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)  # no worker: only the in-process runs below issue
    ids = await submit(project.admin, project.pki.profile_id, 30)

    # A chunk message (the API's coalesced doorbell, or the reconciler's re-send) delivered twice, racing
    # the single-request task for each of its requests.
    rt = _runtime(stack)
    cache = CaKeyCache(rt.ca_keyring, 60)
    uuids = [UUID(rid) for rid in ids]
    try:
        chunks, singles = await asyncio.gather(
            asyncio.gather(issue_many(rt, cache, uuids), issue_many(rt, cache, uuids[::-1])),
            asyncio.gather(*(issue(rt, cache, u) for u in uuids)))
    finally:
        await (await rt.pool()).close()

    assert sum(c["issued"] for c in chunks) + singles.count("issued") == 30, (chunks, singles)
    book = await ledger(stack.database_url)
    assert book.counts == {"issued": 30}
    assert book.certificates == 30
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def test_a_task_delivered_three_times_to_worker_processes_issues_once_and_skips_twice(
        fault_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = fault_stack
    project = await project_with_pki(stack, session)
    # Submitted through an API whose broker is down, so the only messages are the copies sent below.
    offline = ApiClient(session, await asyncio.to_thread(start_api_without_broker, stack), project.admin.token)
    ids = await submit(offline, project.pki.profile_id, 20)
    sender = Celery("duplicate-sender", set_as_current=False)
    sender.conf.update(celery_config(stack.broker_url))
    try:
        for _ in range(3):  # the same task three times, as a redelivery or a reconciler re-send would
            for rid in ids:
                sender.send_task(ISSUE_CERTIFICATE, args=[rid])
    finally:
        sender.close()
    assert sorted(queued_request_ids(stack)) == sorted(ids * 3)

    await asyncio.to_thread(stack.start_worker, name="worker-2")  # two pool processes race for the copies
    await wait_all_final(stack.database_url, 20, timeout=30)
    # Each message is acknowledged only after its run, so wait until every copy has been run.
    outcomes = await _wait_for_outcomes(stack, ids, runs=3, timeout=30)

    assert {rid: sorted(runs) for rid, runs in outcomes.items()} == {
        rid: ["issued", "skipped", "skipped"] for rid in ids}
    book = await ledger(stack.database_url)
    assert book.counts == {"issued": 20}
    assert book.certificates == 20
    assert_exactly_one_certificate_per_issued_request(book, ids)


async def _wait_for_outcomes(stack: Stack, ids: list[str], *, runs: int, timeout: float) -> dict[str, list[str]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcomes = task_outcomes(stack, "worker-2")
        if all(len(outcomes.get(rid, [])) >= runs for rid in ids) or loop.time() > deadline:
            return {rid: outcomes.get(rid, []) for rid in ids}
        await asyncio.sleep(0.2)
