"""The doorbell (issue 11): a worker woken for a chunk of single requests claims every other ready one
with it (oldest first, a bounded number per chunk, ringing again when there were more), and while a
doorbell chunk is on its way the API sends no other. Exactly-once is the claim's, as for any chunk."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from tests.api_client import ApiClient, Tenant
from tests.issuance.issuing import server_key_attributes, submit
from tests.pki_setup import make_pki
from tests.stack import Stack
from worker.issuance import READY_LIMIT


def chunk_events(stack: Stack, offset: int) -> list[dict[str, object]]:
    text = stack.log_path("worker").read_text(errors="replace")[offset:]
    return [e for e in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
            if e.get("msg") == "chunk issued"]


async def test_a_doorbell_chunk_also_issues_requests_whose_message_never_came(
        worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    lost = []
    for i in range(3):
        r = await submit(deaf, pki.profile_id, attributes=server_key_attributes(f"lost{i}.example.test"))
        assert r.status == 202, r.body
        lost.append(r.body["certificateRequestId"])
    # No beat runs here, so no reconciler: only a doorbell chunk can take them.
    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("rung.example.test"), wait=10)
    assert r.status == 200 and r.body["status"] == "issued", r.body
    deadline = time.monotonic() + 5
    while True:
        statuses = await db.fetch("SELECT status FROM certificate_requests WHERE id = ANY($1::uuid[])", lost)
        if all(s["status"] == "issued" for s in statuses):
            break
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.1)
    counts = await db.fetch("SELECT count(*) AS n FROM certificates WHERE request_id = ANY($1::uuid[])"
                            " GROUP BY request_id", lost)
    assert [c["n"] for c in counts] == [1, 1, 1]


async def test_a_burst_of_requests_shares_doorbell_chunks_and_a_backlog_beyond_one_chunk_drains(
        worker: Stack, tenant: Tenant, api_without_broker: str, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    deaf = ApiClient(tenant.admin.session, api_without_broker, tenant.admin.token)
    # A backlog of more ready requests than one chunk claims, then one ring: chunks ring each other on.
    backlog = [(await submit(deaf, pki.profile_id, attributes=server_key_attributes(f"b{i}.example.test"))
                ).body["certificateRequestId"] for i in range(READY_LIMIT * 2 + 5)]
    offset = len(worker.log_path("worker").read_text(errors="replace"))
    burst = await asyncio.gather(*(submit(tenant.admin, pki.profile_id, wait=20,
                                          attributes=server_key_attributes(f"burst{i}.example.test"))
                                   for i in range(40)))
    assert all(r.status == 200 and r.body["status"] == "issued" for r in burst), [r.body for r in burst]
    deadline = time.monotonic() + 20
    while await db.fetchval("SELECT count(*) FROM certificate_requests WHERE id = ANY($1::uuid[])"
                            " AND status <> 'issued'", backlog):
        assert time.monotonic() < deadline, "the backlog did not drain"
        await asyncio.sleep(0.2)
    issued = len(backlog) + len(burst)
    assert await db.fetchval("SELECT count(*) FROM certificates c JOIN certificate_requests r"
                             " ON r.id = c.request_id WHERE r.profile_id = $1::uuid", pki.profile_id) == issued
    # The worker logs a chunk after its transaction commits: the last line may follow the last row.
    deadline = time.monotonic() + 10
    while True:
        chunks = [e for e in chunk_events(worker, offset) if e.get("issued")]
        if sum(int(str(e["issued"])) for e in chunks) >= issued or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert sum(int(str(e["issued"])) for e in chunks) >= issued
    # Far fewer chunks than requests: each took what was ready, none more than its limit plus its own ids.
    assert len(chunks) < issued / 3, len(chunks)
    assert max(int(str(e["ready"])) for e in chunks) <= READY_LIMIT, [(e.get("ready"), e.get("issued")) for e in chunks]
