"""External CAs under faults (issue 13, "Must show" 2), each its own test and its own world (stack with a
private Redis, API, worker, beat, pebble and bind9): whatever happens, one upstream order per request
(counted on pebble's side, from its own log, and in the order URLs the service stored) and every request
ends issued or failed with the upstream's reason."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import asyncpg
import pytest

from tests.api_client import Tenant, open_tenant
from tests.external.conftest import World
from tests.external.upstream import ZONE, ensure_installed
from tests.external.world import (
    EXTERNAL_TIMINGS,
    AcmePki,
    Upstream,
    api_port,
    final,
    make_acme_pki,
    pebble_new_orders,
    server_key_body,
    start_upstream,
    stored_orders,
    submit,
    until,
)
from tests.faults.harness import fault_stack
from tests.stack import Stack

pytestmark = pytest.mark.slow


@dataclass
class Faulty:
    stack: Stack
    upstream: Upstream
    tenant: Tenant
    pki: AcmePki


@asynccontextmanager
async def faulty_world(*, worker_env: dict[str, str] | None = None, concurrency: int = 2,
                       dns01: bool = True) -> AsyncIterator[Faulty]:
    ensure_installed()
    # The stack is made and dropped off the loop (its database set-up runs an event loop of its own).
    made = fault_stack(**{**EXTERNAL_TIMINGS, **(worker_env or {})})
    stack = await asyncio.to_thread(made.__enter__)
    try:
        await asyncio.to_thread(stack.start_api)
        upstream = await asyncio.to_thread(start_upstream, stack.dir, api_port(stack))
        try:
            await asyncio.to_thread(stack.start_worker, concurrency=concurrency)
            stack.start_beat()
            async with aiohttp.ClientSession() as session:
                tenant = await open_tenant(stack, session, "faulty")
                pki = await make_acme_pki(tenant.admin, tenant.project_id, upstream, dns01=dns01)
                yield Faulty(stack, upstream, tenant, pki)
        finally:
            if upstream.pebble.proc is not None and upstream.pebble.proc.poll() is None:
                os.kill(upstream.pebble.proc.pid, signal.SIGCONT)
            upstream.stop()
    finally:
        await asyncio.to_thread(made.__exit__, None, None, None)


async def certificates_per_request(database_url: str, request_ids: list[str]) -> Counter[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT request_id::text FROM certificates WHERE request_id = ANY($1::uuid[])",
                                request_ids)
    finally:
        await conn.close()
    return Counter(r[0] for r in rows)


async def order_row(database_url: str, request_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(database_url)
    try:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT order_url, state FROM external_orders WHERE request_id = $1::uuid", request_id)
        return row
    finally:
        await conn.close()


async def test_a_worker_killed_between_order_creation_and_finalize_resumes_the_same_order() -> None:
    # A long dns-01 propagation wait holds the worker between placing the order and answering it.
    async with faulty_world(worker_env={"KMS_EXTERNAL_DNS_PROPAGATION_SECONDS": "6"}) as w:
        answer = await submit(w.tenant.admin, server_key_body(w.pki.profile_id, f"killed.{ZONE}"))
        request_id = answer["certificateRequestId"]

        async def ordered() -> bool:
            row = await order_row(w.stack.database_url, request_id)
            return row is not None and row["order_url"] is not None

        await until(ordered, timeout=30)
        placed = await order_row(w.stack.database_url, request_id)
        assert placed is not None
        w.stack.kill("worker")  # SIGKILL, the whole process group: mid-order, nothing finalized yet
        assert pebble_new_orders(w.upstream.pebble) == 1
        await asyncio.to_thread(w.stack.start_worker, name="worker2")
        view = await final(w.tenant.admin, request_id, timeout=90)
        assert view["status"] == "issued", view
        assert pebble_new_orders(w.upstream.pebble) == 1  # pebble saw one order, the resumed one
        assert await stored_orders(w.stack.database_url, w.pki.ca_id) == [(request_id, placed["order_url"])]
        assert await certificates_per_request(w.stack.database_url, [request_id]) == {request_id: 1}


async def test_pebble_stopped_for_30_seconds_mid_run_every_request_is_issued_once_after_it_returns() -> None:
    env = {"KMS_EXTERNAL_MAX_ATTEMPTS": "40", "KMS_EXTERNAL_HTTP_TIMEOUT_SECONDS": "3"}
    async with faulty_world(worker_env=env, concurrency=4) as w:
        names = [f"frozen{i}.{ZONE}" for i in range(4)]
        answers = await asyncio.gather(*(submit(w.tenant.admin, server_key_body(w.pki.profile_id, n))
                                         for n in names))
        ids = [a["certificateRequestId"] for a in answers]
        await asyncio.sleep(0.3)  # mid-run: the orders are being placed and answered
        pebble = w.upstream.pebble
        assert pebble.proc is not None
        os.kill(pebble.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        await asyncio.sleep(30)
        os.kill(pebble.proc.pid, signal.SIGCONT)
        views = await asyncio.gather(*(final(w.tenant.admin, r, timeout=100) for r in ids))
        assert [v["status"] for v in views] == ["issued"] * 4, [v.get("errorMessage") for v in views]
        assert time.monotonic() - stopped >= 30
        orders = await stored_orders(w.stack.database_url, w.pki.ca_id)
        assert sorted(r for r, _ in orders) == sorted(ids) and len({u for _, u in orders}) == 4
        assert pebble_new_orders(pebble) == 4  # none placed twice, lost answers included
        assert await certificates_per_request(w.stack.database_url, ids) == dict.fromkeys(ids, 1)


async def test_pebble_answering_errors_fails_the_request_with_pebbles_message_after_bounded_attempts() -> None:
    async with faulty_world(worker_env={"KMS_EXTERNAL_MAX_ATTEMPTS": "3"}) as w:
        # The same pebble (ports, TLS certificate) back with every nonce refused: it has forgotten the CA's
        # account (the service registers it again), and answers each POST with badNonce.
        w.upstream.pebble.env["PEBBLE_WFE_NONCEREJECT"] = "100"
        await asyncio.to_thread(w.upstream.pebble.restart)
        registrations = len(w.upstream.pebble.requests_logged("POST /sign-me-up"))  # the first pebble's one
        answer = await submit(w.tenant.admin, server_key_body(w.pki.profile_id, f"errors.{ZONE}"))
        view = await final(w.tenant.admin, answer["certificateRequestId"], timeout=90)
        assert view["status"] == "failed", view
        assert "badNonce" in view["errorMessage"] and "anti-replay nonce" in view["errorMessage"], view
        assert "3 attempts" in view["errorMessage"], view
        # Bounded: three attempts, each one newOrder and one account registration (acme retries a badNonce
        # once); no order was placed.
        assert len(w.upstream.pebble.requests_logged("POST /order-plz")) <= 3
        assert len(w.upstream.pebble.requests_logged("POST /sign-me-up")) - registrations <= 6
        assert await certificates_per_request(w.stack.database_url, [answer["certificateRequestId"]]) == {}


async def test_an_invalid_authorization_fails_the_request_with_pebbles_reason_after_one_order(
        world: World, ext_tenant: Tenant) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="authz", dns01=False)
    before = pebble_new_orders(world.upstream.pebble)
    # Names under dead.<zone> resolve to 127.0.0.2, where nothing answers pebble's http-01 check.
    answer = await submit(ext_tenant.admin, server_key_body(pki.profile_id, f"x.dead.{ZONE}"))
    view = await final(ext_tenant.admin, answer["certificateRequestId"])
    assert view["status"] == "failed", view
    assert f"authorization for x.dead.{ZONE} is invalid" in view["errorMessage"], view
    assert "urn:ietf:params:acme:error:connection" in view["errorMessage"], view
    assert pebble_new_orders(world.upstream.pebble) - before == 1
    assert len(await stored_orders(world.stack.database_url, pki.ca_id)) == 1


def pebble_calls_per_second(log_text: str) -> Counter[int]:
    """Pebble's own log: one line per request it handled, stamped to the second."""
    counts: Counter[int] = Counter()
    for line in log_text.splitlines():
        if "-> calling handler()" in line:
            stamp = datetime.strptime(" ".join(line.split()[1:3]), "%Y/%m/%d %H:%M:%S")
            counts[int(stamp.timestamp())] += 1
    return counts


async def test_a_rate_budget_of_n_per_second_is_never_exceeded_upstream() -> None:
    rate, burst = 4, 2
    env = {"KMS_EXTERNAL_REQUESTS_PER_SECOND": str(rate), "KMS_EXTERNAL_BURST": str(burst)}
    async with faulty_world(worker_env=env, concurrency=4, dns01=False) as w:
        answers = await asyncio.gather(*(submit(w.tenant.admin, server_key_body(w.pki.profile_id, f"rate{i}.{ZONE}"))
                                         for i in range(6)))
        views = await asyncio.gather(*(final(w.tenant.admin, a["certificateRequestId"], timeout=100)
                                       for a in answers))
        assert [v["status"] for v in views] == ["issued"] * 6, [v.get("errorMessage") for v in views]
        per_second = pebble_calls_per_second(w.upstream.pebble.log_path.read_text())
        seconds = sorted(per_second)
        total = sum(per_second.values())
        # In any run of k whole seconds, at most burst + rate * (k + 1) calls (the window's edges are
        # whole seconds of pebble's clock, so one more second of refill fits in).
        for i, first in enumerate(seconds):
            for last in seconds[i:]:
                calls = sum(per_second[s] for s in range(first, last + 1))
                assert calls <= burst + rate * (last - first + 1), (first, last, calls, per_second)
        # And the budget did bind: the calls took at least as long as the rate demands.
        assert total > burst + rate * 2
        assert seconds[-1] - seconds[0] + 1 >= (total - burst) / rate - 1, per_second
