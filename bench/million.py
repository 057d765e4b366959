"""Issuance and reads with a million certificates stored, against an empty database, in one run.

    .venv/bin/python -m bench.million --certificates 1000000

Two private stacks (each its own database, Redis database, API and worker): one holds only what the
benchmark makes (a project, a CA chain, a profile), the other also ``--certificates`` certificates of
that same project, profile and issuing CA, each with its request (status issued), its serial reserved in
``issued_serials``, visible to the API's reads as any issued certificate is. They are made by PostgreSQL
(``INSERT ... SELECT generate_series``, with the secondary indexes built after the load and foreign-key
triggers off, as ``tests/lifecycle/stored_certificates.py`` does): copies of one certificate the stack
really issued (its PEM, chain and key algorithm) with their own id, serial and common name
(``host<i>.million.test``), issued over the past year (one every ~30 s), valid 90 days (three in four
expired). Then VACUUM ANALYZE and a CHECKPOINT, so the measurement pays for neither. No audit rows are
made for them (an append-only table by id: its size does not change an insert).

In each database: the issuance rate of a closed loop of ``--clients`` (16) for ``--duration`` (10) s after
a 3 s warm-up (fresh EC P-256 CSRs, ``?wait=10``), ``--rounds`` (2) times, in the order empty, stored,
stored, empty (a machine that drifts favours neither; the mean is compared); then, one call at a time,
p50/p95/p99 of each read over ``--calls`` (300) calls (after 10 not counted; at most ``--route-seconds``
(30) s each, but 5 calls at least):

- lookup: ``GET /api/v1/cert-manager/certificates/{id}`` (random stored certificates);
- the request list (offset/limit): ``GET .../certificates/certificate-requests?projectId=&limit=20``,
  its second page by ``cursor``, and its search ``POST .../certificate-requests/search`` for a common name
  substring (``host4242``);
- a profile's certificates (offset/limit): ``GET .../certificate-profiles/{id}/certificates?limit=20``;
- the web UI's certificates list (``shared.db.certificate_listing``, keyset): ``GET
  /projects/{id}/certificates`` with a viewer's session.

Prints the seeding time, a table per database, the ratio of the rates (stored / empty, pass when >= 0.9)
and for each read whether p95 < 20 ms with the certificates stored; then JSON. The per-identity rate
limit (and the per-source one, which the web UI's pages draw from) is raised out of reach: one identity
makes every call.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import asyncpg

from api.web.base import SESSION_COOKIE
from bench.common import (
    ISSUE,
    Summary,
    drive,
    issue_bodies,
    make_csrs,
    quantiles_ms,
    single_issuer,
    start_stack,
    summarize,
    tenant_with_pki,
)
from shared import users
from shared.db.pool import create_pool
from tests.lifecycle.stored_certificates import bulk_load
from tests.pki_setup import Pki
from tests.stack import Stack

CERTIFICATES = "/api/v1/cert-manager/certificates"
REQUESTS = CERTIFICATES + "/certificate-requests"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
WEB_PASSWORD = "correct horse battery staple"
SEARCH = "host4242"
P95_LIMIT_MS = 20.0
RATE_RATIO = 0.9
ENV = {"KMS_RATE_LIMIT_PER_SOURCE_PER_SECOND": "1000000", "KMS_RATE_LIMIT_PER_SOURCE_BURST": "1000000"}

# Certificate i = 1..n and its request: ids, serial and common name of their own; issued (i % 365) days
# and (i % 86400) seconds before an hour ago, for 90 days; every other column the template's.
_ISSUED = "now() - interval '1 hour' - make_interval(days => i % 365, secs => i % 86400)"
_REQUEST_COLUMNS = {
    "id": "md5('r' || i)::uuid", "status": "'issued'", "certificate_id": "md5('c' || i)::uuid",
    "created_at": "nb", "updated_at": "nb", "idempotency_key": "NULL", "claim_token": "NULL",
    "lease_expires_at": "NULL", "batch_id": "NULL", "batch_index": "NULL", "renewal_of": "NULL",
}
_SERIAL = "md5('s' || i) || left(md5('t' || i), 8)"
_CERTIFICATE_COLUMNS = {
    "id": "md5('c' || i)::uuid", "request_id": "md5('r' || i)::uuid", "serial_number": _SERIAL,
    "common_name": "'host' || i || '.million.test'", "not_before": "nb", "not_after": "nb + interval '90 days'",
    "created_at": "nb", "renewed_from_id": "NULL", "renewed_by_id": "NULL", "renewal_request_id": "NULL",
}


def certificate_id(i: int) -> uuid.UUID:
    """The id of stored certificate ``i`` (as the seeding SQL makes it: md5('c' || i)::uuid)."""
    return uuid.UUID(hashlib.md5(f"c{i}".encode()).hexdigest())  # an id, not a digest of secrets


async def _copy(conn: asyncpg.Connection, table: str, overrides: dict[str, str], template: uuid.UUID,
                n: int) -> None:
    columns = [r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1"
        " ORDER BY ordinal_position", table)]
    values = [overrides.get(c, f"t.{c}") for c in columns]
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
        f" FROM {table} t, generate_series(1, $2::int) AS i, LATERAL (SELECT {_ISSUED} AS nb) AS issued"
        " WHERE t.id = $1 ORDER BY 1", template, n)


async def seed(database_url: str, request_id: uuid.UUID, cert_id: uuid.UUID, n: int) -> dict[str, float]:
    """``n`` copies of the issued request ``request_id`` and its certificate ``cert_id`` (see the module
    docstring); the seconds the load (with its index builds) and the VACUUM ANALYZE + CHECKPOINT took."""
    conn = await asyncpg.connect(database_url)
    try:
        issuer = await conn.fetchval(
            "SELECT s.issuer_id FROM issued_serials s JOIN certificates c ON c.serial_number = s.serial_number"
            " WHERE c.id = $1", cert_id)
        start = time.monotonic()
        await conn.execute("SET work_mem = '256MB'")
        async with bulk_load(conn, ["certificate_requests", "certificates", "issued_serials"]):
            await _copy(conn, "certificate_requests", _REQUEST_COLUMNS, request_id, n)
            await _copy(conn, "certificates", _CERTIFICATE_COLUMNS, cert_id, n)
            await conn.execute(f"INSERT INTO issued_serials (issuer_id, serial_number) SELECT $1, {_SERIAL}"
                               " FROM generate_series(1, $2::int) AS i ORDER BY 2", issuer, n)
        loaded = time.monotonic()
        await conn.execute("VACUUM ANALYZE certificate_requests, certificates, issued_serials")
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        return {"loadSeconds": round(loaded - start, 1), "vacuumSeconds": round(time.monotonic() - loaded, 1),
                "databaseMB": round(size / 2**20)}
    finally:
        await conn.close()


@dataclass
class Read:
    name: str
    calls: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class Tenant:
    token: str
    pki: Pki
    cookie: str
    template_request: uuid.UUID
    template_certificate: uuid.UUID


async def tenant(stack: Stack) -> Tenant:
    """The benchmark's project, PKI and a web viewer's session, and one certificate really issued."""
    token, pki = await tenant_with_pki(stack)
    email = f"viewer-{secrets.token_hex(4)}@million.test"
    pool = await create_pool(stack.database_url, min_size=1, max_size=1)
    try:
        await users.create_user(pool, email=email, password=WEB_PASSWORD, project_id=uuid.UUID(pki.project_id),
                                role="viewer", actor="bench")
        session = await users.sign_in(pool, email, WEB_PASSWORD, 1800)
    finally:
        await pool.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.api_url + ISSUE, data=issue_bodies(pki.profile_id, make_csrs(1))[0],
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as r:
            answer = await r.json()
            assert r.status == 200, answer
    return Tenant(token, pki, session.cookie_value, uuid.UUID(answer["certificateRequestId"]),
                  uuid.UUID(answer["certificate"]["certificateId"]))


async def time_read(session: aiohttp.ClientSession, name: str, method: str, url: str, calls: int,
                    budget: float, body: Any = None, headers: dict[str, str] | None = None,
                    vary: list[str] | None = None) -> Read:
    """``calls`` calls one after the other, after up to 10 not counted (a quarter of the budget at most),
    in ``budget`` seconds at most (but 5 counted calls at least); ``vary`` replaces ``{}`` in ``url``
    call by call."""
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    data = None if body is None else json.dumps(body)
    warm = 10
    for k in range(calls + 10):
        target = url.format(vary[k % len(vary)]) if vary else url
        t0 = time.perf_counter()
        async with session.request(method, target, data=data, headers=headers) as r:
            await r.read()
            ok = r.status == 200
        elapsed = time.perf_counter() - t0
        if k < warm:
            if time.monotonic() - start > budget / 4:
                warm = k + 1
            continue
        if ok:
            latencies.append(elapsed)
        else:
            errors += 1
        if len(latencies) + errors >= calls or (len(latencies) + errors >= 5 and time.monotonic() - start > budget):
            break
    p50, p95, p99 = quantiles_ms(latencies)
    return Read(name, len(latencies) + errors, errors, p50, p95, p99)


async def measure_rate(stack: Stack, t: Tenant, csrs: list[str], args: argparse.Namespace) -> Summary:
    bodies = issue_bodies(t.pki.profile_id, csrs)
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        one = single_issuer(session, stack.api_url, t.token, bodies)
        await drive(3, args.clients, one)
        latencies, errors, seconds = await drive(args.duration, args.clients, one)
    return summarize(f"single, {args.clients} clients", latencies, errors, seconds)


async def measure_reads(stack: Stack, t: Tenant, stored: int, args: argparse.Namespace) -> list[Read]:
    api = {"Authorization": f"Bearer {t.token}", "Content-Type": "application/json"}
    project, base = t.pki.project_id, stack.api_url
    conn = await asyncpg.connect(stack.database_url)
    try:
        # The issuance runs wrote thousands of rows (all there is in the empty database): the planner sees
        # them, as autovacuum's ANALYZE would let it a minute later.
        await conn.execute("ANALYZE")
        if stored:
            ids = [str(certificate_id(secrets.randbelow(stored) + 1)) for _ in range(args.calls + 10)]
        else:
            ids = [str(r["id"]) for r in await conn.fetch(
                "SELECT id FROM certificates ORDER BY random() LIMIT $1", args.calls + 10)]
    finally:
        await conn.close()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.get(f"{base}{REQUESTS}?projectId={project}&limit=20", headers=api) as r:
            cursor = (await r.json())["nextCursor"]
        reads = []
        timed = [
            ("lookup GET /certificates/{id}", "GET", base + CERTIFICATES + "/{}", None, api, ids),
            ("request list, first page", "GET", f"{base}{REQUESTS}?projectId={project}&limit=20", None, api, None),
            ("request list, page 2 (cursor)", "GET",
             f"{base}{REQUESTS}?projectId={project}&limit=20&cursor={cursor}", None, api, None),
            (f"request search '{SEARCH}'", "POST", f"{base}{REQUESTS}/search",
             {"projectId": project, "search": SEARCH, "limit": 20}, api, None),
            ("profile's certificates, page 1", "GET", f"{base}{PROFILES}/{t.pki.profile_id}/certificates?limit=20",
             None, api, None),
            ("web UI certificates list", "GET", f"{base}/projects/{project}/certificates", None,
             {"Cookie": f"{SESSION_COOKIE}={t.cookie}"}, None),
        ]
        for name, method, url, body, headers, vary in timed:
            if cursor is None and "cursor" in url:
                continue
            reads.append(await time_read(session, name, method, url, args.calls, args.route_seconds, body, headers,
                                         vary))
    return reads


def report(result: dict[str, Any]) -> None:
    n = result["certificates"]
    if result["seeding"]:
        s = result["seeding"]
        print(f"seeding {n:,} certificates: load and index builds {s['loadSeconds']} s, VACUUM ANALYZE +"
              f" CHECKPOINT {s['vacuumSeconds']} s, database {s['databaseMB']} MB")
    header = f"{'':<34}{'empty':>24}{format(n, ',') + ' stored':>24}"
    print(header)
    print(f"{'':<34}{'certs/s  p50  p99 ms':>24}{'certs/s  p50  p99 ms':>24}")
    print("-" * len(header))
    for k, (before, after) in enumerate(zip(result["empty"]["rates"], result["stored"]["rates"], strict=True), 1):
        cells = [f"{r['per_second']}  {r['p50_ms']}  {r['p99_ms']}" for r in (before, after)]
        print(f"{'issuance rate, run ' + str(k):<34}{cells[0]:>24}{cells[1]:>24}")
    print(f"{'issuance rate, mean':<34}{result['empty']['per_second']:>24}{result['stored']['per_second']:>24}")
    print(f"{'':<34}{'calls  p50  p95 ms':>24}{'calls  p50  p95 ms':>24}")
    for before, after in zip(result["empty"]["reads"], result["stored"]["reads"], strict=True):
        cells = [f"{r['calls']}{'/' + str(r['errors']) + ' err' if r['errors'] else ''}  {r['p50_ms']}  {r['p95_ms']}"
                 for r in (before, after)]
        print(f"{before['name']:<34}{cells[0]:>24}{cells[1]:>24}")
    v = result["verdict"]
    print(f"\nrate stored / empty = {v['rateRatio']} -> {'PASS' if v['ratePassed'] else 'FAIL'} (>= {RATE_RATIO})")
    for name, ok in v["p95Passed"].items():
        print(f"p95 < {P95_LIMIT_MS:g} ms with {n:,} stored, {name}: {'PASS' if ok else 'FAIL'}")
    print(json.dumps(result))


async def run(stacks: dict[str, Stack], n: int, args: argparse.Namespace) -> dict[str, Any]:
    tenants = {label: await tenant(stack) for label, stack in stacks.items()}
    seeding = None
    if n:
        t = tenants["stored"]
        seeding = await seed(stacks["stored"].database_url, t.template_request, t.template_certificate, n)
        print(f"seeded {n:,} certificates in {seeding['loadSeconds']} s (+ {seeding['vacuumSeconds']} s VACUUM"
              " ANALYZE and CHECKPOINT)", flush=True)
    result: dict[str, Any] = {"certificates": n, "seeding": seeding, "clients": args.clients,
                              "duration": args.duration}
    csrs = make_csrs(int(1500 * (args.duration + 3)))
    rates: dict[str, list[Summary]] = {label: [] for label in stacks}
    for k in range(args.rounds):
        # empty, stored, then stored, empty...: a machine that drifts during the run favours neither.
        for label in ("empty", "stored") if k % 2 == 0 else ("stored", "empty"):
            rates[label].append(await measure_rate(stacks[label], tenants[label], csrs, args))
    for label, stack in stacks.items():
        reads = await measure_reads(stack, tenants[label], n if label == "stored" else 0, args)
        result[label] = {"rates": [asdict(r) for r in rates[label]],
                         "per_second": round(statistics.mean(r.per_second for r in rates[label]), 1),
                         "reads": [asdict(r) for r in reads]}
    ratio = round(result["stored"]["per_second"] / (result["empty"]["per_second"] or 1), 3)
    result["verdict"] = {
        "rateRatio": ratio, "ratePassed": ratio >= RATE_RATIO,
        "p95Passed": {r["name"]: r["p95_ms"] is not None and r["p95_ms"] < P95_LIMIT_MS and not r["errors"]
                      for r in result["stored"]["reads"]}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10, help="seconds of the issuance run (10)")
    parser.add_argument("--calls", type=int, default=300, help="calls of each read (300)")
    parser.add_argument("--route-seconds", type=float, default=30, help="at most this long per read (30)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="issuance runs of each database, in the order empty, stored, stored, empty... (2)")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    stacks: dict[str, Stack] = {}
    try:
        for label in ("empty", "stored"):
            stacks[label] = start_stack(f"million_{label}", worker_concurrency=args.worker_concurrency, env=ENV)
        report(asyncio.run(run(stacks, args.certificates, args)))
    finally:
        for stack in stacks.values():
            stack.drop()


if __name__ == "__main__":
    main()
