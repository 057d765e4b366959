"""Shared pieces of the benchmarks: start a private stack, make a project and PKI, make CSRs, drive
single requests, find and read the stack's processes (/proc), report."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import access
from shared.db.pool import create_pool
from tests.api_client import ApiClient, login
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack

ISSUE = "/api/v1/cert-manager/certificates?wait=10"
BATCHES = "/api/v1/cert-manager/certificate-batches"
# A benchmark is one identity: its per-identity rate limit (500/s by default) is raised out of reach so
# that it never answers 429; the check itself still runs on every request, as in production.
BENCH_ENV = {"KMS_LOG_LEVEL": "WARNING", "KMS_RATE_LIMIT_PER_IDENTITY_PER_SECOND": "1000000",
             "KMS_RATE_LIMIT_PER_IDENTITY_BURST": "1000000"}


def start_stack(name: str, *, workers: int = 1, worker_concurrency: int = 2, worker_pool: str = "prefork",
                env: dict[str, str] | None = None, beat: bool = False) -> Stack:
    """A private stack (own database, Redis database, the API, ``workers`` worker processes and with
    ``beat`` the scheduler, as deployed); the caller drops it."""
    stack = Stack(name=name, extra_env={**BENCH_ENV, **(env or {})})
    stack.create_database()
    try:
        stack.start_api()
        for n in range(workers):
            stack.start_worker(name=f"worker{n}" if n else "worker", concurrency=worker_concurrency,
                               extra=["--pool", worker_pool])
        if beat:
            stack.start_beat()
    except BaseException:
        stack.drop()
        raise
    return stack


def make_csrs(n: int, domain: str = "example.test") -> list[str]:
    """Fresh EC P-256 CSRs with one DNS SAN each (made before the clock starts)."""
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"host{i}.{domain}"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return out


async def tenant_with_pki(stack: Stack) -> tuple[str, Pki]:
    """A project, a logged-in admin token and an EC P-256 CA chain with an open profile."""
    pool = await create_pool(stack.database_url, min_size=1, max_size=1)
    try:
        project_id, new = await access.bootstrap(pool, "bench")
    finally:
        await pool.close()
    async with aiohttp.ClientSession() as session:
        client = ApiClient(session, stack.api_url)
        token = await login(client, new.identity.client_id, new.client_secret)
        pki = await make_pki(client.with_token(token), str(project_id))
    return token, pki


async def submit_batch(session: aiohttp.ClientSession, api_url: str, token: str, profile_id: str, csrs: list[str]
                    ) -> tuple[dict[str, Any], float]:
    """One batch of ``csrs``, posted and long-polled until it reports completed: its final view, and the
    ``time.monotonic()`` at which the POST was answered (every item evaluated and stored)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"profileId": profile_id, "items": [{"csr": c} for c in csrs]})
    async with session.post(api_url + BATCHES, data=body, headers=headers) as r:
        created = await r.json()
        assert r.status == 202, created
    submitted = time.monotonic()
    while True:
        async with session.get(f"{api_url}{BATCHES}/{created['batchId']}?wait=30", headers=headers) as r:
            view: dict[str, Any] = await r.json()
        if view["status"] == "completed":
            return view, submitted


def issue_bodies(profile_id: str, csrs: list[str]) -> list[str]:
    return [json.dumps({"profileId": profile_id, "csr": c}) for c in csrs]


def single_issuer(session: aiohttp.ClientSession, api_url: str, token: str, bodies: list[str],
                  failures: collections.Counter[str] | None = None) -> Callable[[int], Awaitable[bool]]:
    """``one(i)`` for ``drive``: POST body ``i`` (modulo: a CSR sent again is still a new request) with
    ``?wait=10``; True when answered 200 (issued). Each failure is counted in ``failures`` by its status
    code or exception name (a refused connection or a timeout is a failure, not a crash)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def one(i: int) -> bool:
        try:
            async with session.post(api_url + ISSUE, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                kind = str(r.status)
        except (TimeoutError, aiohttp.ClientError) as err:
            kind = type(err).__name__
        if kind != "200" and failures is not None:
            failures[kind] += 1
        return kind == "200"

    return one


@dataclass
class Summary:
    name: str
    certificates: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float | None
    p99_ms: float | None


def summarize(name: str, latencies: list[float], errors: int, seconds: float) -> Summary:
    p50 = p99 = None
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        p50, p99 = round(q[49] * 1000, 1), round(q[98] * 1000, 1)
    return Summary(name, len(latencies), errors, round(seconds, 2), round(len(latencies) / seconds, 1), p50, p99)


def print_table(rows: list[Summary], extra: dict[str, Any] | None = None) -> None:
    header = f"{'path':<28}{'certs':>9}{'errors':>8}{'secs':>8}{'certs/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.name:<28}{r.certificates:>9}{r.errors:>8}{r.seconds:>8}{r.per_second:>10}"
              f"{_fmt(r.p50_ms):>9}{_fmt(r.p99_ms):>9}")
    print(json.dumps({"results": [asdict(r) for r in rows], **(extra or {})}))


def _fmt(v: float | None) -> str:
    return "-" if v is None else str(v)


async def drive(duration: float, clients: int, one: Any) -> tuple[list[float], int, float]:
    """Run ``clients`` loops of ``one(i) -> bool`` for ``duration`` seconds; latencies of successes."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    counter = 0
    stop_at = loop.time() + duration

    async def worker() -> None:
        nonlocal errors, counter
        while loop.time() < stop_at:
            i = counter
            counter += 1
            t0 = loop.time()
            ok = await one(i)
            if ok:
                latencies.append(loop.time() - t0)
            else:
                errors += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, loop.time() - start


async def drive_open_loop(duration: float, rate: float, one: Any,
                          record: Callable[[float, float, bool], None] | None = None
                          ) -> tuple[list[float], int, float]:
    """Start ``one(i) -> bool`` ``rate`` times a second for ``duration`` seconds whether or not earlier
    calls have answered (an open loop: a slow answer does not slow the arrivals); latencies of successes.
    ``record(sent, latency, ok)``, if given, sees every call (``sent`` in seconds from the start)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async def timed(i: int) -> None:
        nonlocal errors
        t0 = loop.time()
        ok = await one(i)
        elapsed = loop.time() - t0
        if ok:
            latencies.append(elapsed)
        else:
            errors += 1
        if record is not None:
            record(t0 - start, elapsed, ok)

    start = loop.time()
    running: set[asyncio.Future[None]] = set()  # only those still running: a long run keeps no finished task
    for i in range(int(duration * rate)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(timed(i))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return latencies, errors, loop.time() - start


# -- the stack's processes, read from /proc -------------------------------------------------------

def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a Celery worker's pool processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def pids_named(comm: str) -> list[int]:
    """Every process whose command name (``/proc/PID/comm``) is ``comm``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


@dataclass(frozen=True)
class Process:
    label: str  # "api", "worker (celery main)", "worker pool 1", ...
    group: str  # "api", "worker (celery main)" or "worker (pool processes)"
    pid: int


def stack_processes(stack: Stack) -> list[Process]:
    """The API processes (with any children), the worker processes (Celery main and pool processes) and
    beat, of those the stack started, as they are now (a pool process may be replaced)."""
    found = []
    for name, proc in stack.processes.items():
        if proc.poll() is not None:
            continue
        if name.startswith("api"):
            found.append(Process(name, "api", proc.pid))
            found += [Process(f"{name} child {n}", "api", c) for n, c in enumerate(children(proc.pid), 1)]
        elif name.startswith("worker"):
            found.append(Process(f"{name} (celery main)", "worker (celery main)", proc.pid))
            found += [Process(f"{name} pool {n}", "worker (pool processes)", c)
                      for n, c in enumerate(children(proc.pid), 1)]
        elif name == "beat":
            found.append(Process("beat", "beat", proc.pid))
    return found


def process_groups(stack: Stack) -> dict[str, list[int]]:
    """The stack's processes by kind, with every PostgreSQL and Redis server process of the machine and
    this load generator."""
    groups: dict[str, list[int]] = {"api": [], "worker (celery main)": [], "worker (pool processes)": []}
    for p in stack_processes(stack):
        groups.setdefault(p.group, []).append(p.pid)
    groups["postgresql"] = pids_named("postgres")
    groups["redis"] = pids_named("redis-server")
    groups["load generator"] = [os.getpid()]
    return groups


@dataclass(frozen=True)
class Memory:
    rss_kb: int
    private_kb: int | None  # Private_Clean + Private_Dirty (smaps_rollup), when readable


def memory(pid: int) -> Memory | None:
    """Resident memory of ``pid`` now, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    private = None
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        private = sum(int(line.split()[1]) for line in rollup.splitlines()
                      if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except (OSError, ValueError):
        pass
    return Memory(rss, private)


def quantiles_ms(seconds: list[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p95 and p99 of ``seconds`` in ms (None with fewer than two)."""
    if len(seconds) < 2:
        return None, None, None
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return round(q[49] * 1000, 2), round(q[94] * 1000, 2), round(q[98] * 1000, 2)


def log_digest(stack: Stack, limit: int = 12) -> list[tuple[int, str]]:
    """The stack's warnings and errors so far, counted by process, logger, message and error (the cause
    of a run's failures: a 503 is logged by the API with the exception behind it)."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(stack.dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                if entry.get("level") in ("warning", "error", "critical"):
                    counts[f"{path.stem} {entry['level']} {entry.get('logger')}: {entry.get('msg')}"
                           f" {str(entry.get('error', ''))[:120]}".rstrip()] += 1
            elif "WARNING" in line or "ERROR" in line or "CRITICAL" in line:
                counts[f"{path.stem}: {line.split(']', 1)[-1].strip()[:160]}"] += 1
    return [(n, text) for text, n in counts.most_common(limit)]
