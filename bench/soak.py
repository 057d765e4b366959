"""Soak: single requests arriving at a steady rate for a long time, and whether memory, latency and
errors stay flat.

    .venv/bin/python -m bench.soak --duration 600            # at half the capacity it measures first
    .venv/bin/python -m bench.soak --duration 600 --rate 150 # at a rate of your choosing

Starts a private stack (own database and Redis database, the API, one worker and beat, as deployed;
``--no-beat`` leaves beat out). Without ``--rate`` it first measures the capacity: a closed loop of
``--clients`` (16) for ``--capacity-seconds`` (10) after a 3 s warm-up, and soaks at half of it. The
soak is an open loop: requests (a fresh EC P-256 CSR each, ``?wait=10``, from a pool of ``--csrs``
pre-made CSRs sent again in turn) arrive at the rate whatever the answers do; anything but 200
(issued) is an error, counted by status code or exception. The per-identity rate limit is raised out of
reach (``bench.common.BENCH_ENV``): one identity makes every request.

Every ``--window`` seconds (10) it reads from /proc the resident memory (VmRSS, and the private part,
Private_Clean + Private_Dirty of smaps_rollup) of every process of the stack: the API, the Celery main
process and each pool process, the PostgreSQL backends serving the stack's database (summed, with their
number: they come and go as the pools recycle connections), the Redis server (shared with anything else
on the machine) and this load generator (shown, not judged: it keeps every latency). Each request is
counted in the window it was sent in. (The API's child process is multiprocessing's resource tracker.)

At the end it prints a table per window (sent, issued, errors, p50/p99 ms, memory in MB) and a verdict:
for each process its memory at the end of the settling time (``--settle``: the first minute, or a third of
a run shorter than three minutes) against the end of the run, the change in %, flat if within
``--flat-percent`` (10). RSS is judged, except for the PostgreSQL backends: their RSS counts every page of
shared_buffers they have touched (it rises as the table grows and is no leak) and they come and go (a
pool closes a connection idle for 60 s or used for 50,000 queries), so the private memory of the
backends alive at both ends is judged (none may be: then no backend lived long enough to grow). p99 per
window after settling: min/median/max, stable when no window's p99 is more than twice the median and the
median of the last third of the windows is at most 1.5 times that of the first third (a queue building
up); errors: zero, and the warnings and errors the stack logged, counted. Then JSON.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import asyncpg
import redis

from bench.common import (
    drive,
    drive_open_loop,
    issue_bodies,
    log_digest,
    make_csrs,
    memory,
    quantiles_ms,
    single_issuer,
    stack_processes,
    start_stack,
    summarize,
    tenant_with_pki,
)
from tests.stack import Stack

BACKENDS = "postgresql backends"
LOAD_GENERATOR = "load generator"


@dataclass
class Sample:
    """Memory of the stack's processes at ``at`` seconds into the soak, KB by label."""

    at: float
    rss_kb: dict[str, int] = field(default_factory=dict)
    private_kb: dict[str, int | None] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)
    backends_private_kb: dict[int, int | None] = field(default_factory=dict)  # by pid


def redis_server(stack: Stack) -> list[int]:
    """The Redis server the stack's broker URL names (it says its own pid; a fork saving the data set is
    another process, not counted)."""
    client = redis.Redis.from_url(stack.broker_url)
    try:
        return [int(client.info("server")["process_id"])]
    finally:
        client.close()


async def sample(stack: Stack, conn: asyncpg.Connection, at: float, redis_pids: list[int]) -> Sample:
    out = Sample(round(at, 1))
    backends = [r["pid"] for r in await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", stack.db_name)]
    processes = [(p.label, [p.pid]) for p in stack_processes(stack)]
    processes += [(BACKENDS, backends), ("redis-server", redis_pids),
                  (LOAD_GENERATOR, [os.getpid()])]
    for pid in backends:
        m = memory(pid)
        if m is not None:
            out.backends_private_kb[pid] = m.private_kb
    for label, pids in processes:
        found = [m for m in (memory(p) for p in pids) if m is not None]
        out.rss_kb[label] = sum(m.rss_kb for m in found)
        private = [m.private_kb for m in found]
        out.private_kb[label] = None if None in private else sum(p for p in private if p is not None)
        out.pids[label] = pids
    return out


async def sampler(stack: Stack, conn: asyncpg.Connection, window: float, samples: list[Sample],
                  redis_pids: list[int]) -> None:
    """A sample now and at the end of every window, until cancelled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    while True:
        samples.append(await sample(stack, conn, loop.time() - start, redis_pids))
        k += 1
        await asyncio.sleep(max(0.0, start + k * window - loop.time()))


@dataclass
class Window:
    start: float
    sent: int
    issued: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class Windows:
    """Each call's latency (successes) or error, kept per window as it comes (8 bytes a call: the load
    generator's own memory stays flat too)."""

    def __init__(self, window: float, duration: float) -> None:
        self.window = window
        self.n = max(1, math.ceil(duration / window))
        self.latencies = [array.array("d") for _ in range(self.n)]
        self.errors = [0] * self.n

    def record(self, sent: float, latency: float, ok: bool) -> None:
        k = min(self.n - 1, int(sent // self.window))
        if ok:
            self.latencies[k].append(latency)
        else:
            self.errors[k] += 1

    def summary(self) -> list[Window]:
        out = []
        for k in range(self.n):
            issued = len(self.latencies[k])
            p50, _, p99 = quantiles_ms(list(self.latencies[k]))
            out.append(Window(k * self.window, issued + self.errors[k], issued, self.errors[k], p50, p99))
        return out


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _judged(first: Sample, last: Sample, label: str) -> tuple[int | None, int | None]:
    """What is judged flat, then and at the end: RSS, except for the backends (they come and go): the
    private KB of those alive at both ends."""
    if label != BACKENDS:
        return first.rss_kb.get(label), last.rss_kb.get(label)
    both = set(first.backends_private_kb) & set(last.backends_private_kb)
    then = [first.backends_private_kb[p] for p in both]
    end = [last.backends_private_kb[p] for p in both]
    if not both or None in then or None in end:
        return None, None
    return sum(k or 0 for k in then), sum(k or 0 for k in end)


def verdict(samples: list[Sample], wins: list[Window], settle: float, flat_percent: float,
            failures: collections.Counter[str]) -> dict[str, Any]:
    first = min((s for s in samples if s.at >= settle - 1), key=lambda s: s.at, default=samples[0])
    last = samples[-1]
    processes: dict[str, dict[str, Any]] = {}
    for label in first.rss_kb:
        both = len(set(first.backends_private_kb) & set(last.backends_private_kb))
        judged = f"private of {both}" if label == BACKENDS else "rss"
        before, after = _judged(first, last, label)
        same = first.pids.get(label) == last.pids.get(label)
        if not before or after is None or (label != BACKENDS and not same):
            processes[label] = {"judged": judged, "before_kb": before, "after_kb": after, "change_percent": None,
                                "flat": None, "note": "no backend lived from then to the end (connections are"
                                " recycled)" if label == BACKENDS else "not there at both ends (replaced or gone)"}
            continue
        change = 100 * (after - before) / before
        mine = label == LOAD_GENERATOR  # it keeps every latency: shown, not judged
        processes[label] = {"judged": "not judged" if mine else judged, "before_kb": before, "after_kb": after,
                            "change_percent": round(change, 1), "flat": None if mine else abs(change) <= flat_percent,
                            "pids_before": len(first.pids[label]), "pids_after": len(last.pids[label]),
                            **({"note": "the benchmark itself"} if mine else {})}
    p99s = [w.p99_ms for w in wins if w.start >= settle and w.p99_ms is not None]
    median = round(statistics.median(p99s), 2) if p99s else None
    third = max(1, len(p99s) // 3)
    # A queue that builds up shows as a trend, not as one bad window.
    trend = round(statistics.median(p99s[-third:]) / statistics.median(p99s[:third]), 2) if p99s else None
    p99 = {"min_ms": min(p99s, default=None), "median_ms": median, "max_ms": max(p99s, default=None),
           "trend": trend, "stable": median is not None and trend is not None and max(p99s) <= 2 * median
           and trend <= 1.5}
    errors = sum(w.errors for w in wins)
    flat = all(p["flat"] for p in processes.values() if p["flat"] is not None)
    return {"settledAt": first.at, "endedAt": last.at, "processes": processes, "p99": p99, "errors": errors,
            "errorKinds": dict(failures), "memoryFlat": flat, "passed": flat and p99["stable"] and errors == 0}


def print_report(result: dict[str, Any], samples: list[Sample], wins: list[Window]) -> None:
    labels = list(samples[0].rss_kb)
    print(f"\nsoak at {result['rate']}/s for {result['duration']} s"
          + (f" (capacity {result['capacity']['per_second']}/s, halved)" if result["capacity"] else ""))
    print("t: the window's start; memory at its end, RSS in MB (" + BACKENDS + ": private MB, and their number)")
    names = [lbl.replace(" (celery main)", " main") for lbl in labels]
    header = f"{'t s':>6}{'sent':>7}{'issued':>8}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}  " + "".join(
        f"{n[:16]:>17}" for n in names)
    print(header)
    print("-" * len(header))
    by_end = {round(s.at / result["window"]): s for s in samples}
    for k, w in enumerate(wins):
        s = by_end.get(k + 1)
        cells = ""
        for lbl in labels:
            if s is None:
                cells += f"{'':>17}"
            elif lbl == BACKENDS:
                cells += f"{_mb(s.private_kb.get(lbl)) + ' (' + str(len(s.pids.get(lbl, []))) + ')':>17}"
            else:
                cells += f"{_mb(s.rss_kb.get(lbl)):>17}"
        print(f"{w.start:>6.0f}{w.sent:>7}{w.issued:>8}{w.errors:>7}{w.p50_ms or '-':>8}{w.p99_ms or '-':>8}  "
              + cells)
    v = result["verdict"]
    print(f"\nmemory, at {v['settledAt']} s (after settling) against {v['endedAt']} s (the end), flat within "
          f"{result['flat_percent']} %:")
    print(f"{'process':<34}{'judged':>16}{'MB then':>10}{'MB end':>10}{'change %':>10}  verdict")
    for label, p in v["processes"].items():
        word = "-" if p["flat"] is None else "flat" if p["flat"] else "GROWS" if p["change_percent"] > 0 else "SHRINKS"
        print(f"{label:<34}{p['judged']:>16}{_mb(p['before_kb']):>10}{_mb(p['after_kb']):>10}"
              f"{'-' if p['change_percent'] is None else p['change_percent']:>10}  {word}"
              + (f" ({p['note']})" if p.get("note") else ""))
    p99 = v["p99"]
    print(f"p99 per window after settling: min {p99['min_ms']} / median {p99['median_ms']} / max {p99['max_ms']} ms"
          f", last third / first third {p99['trend']} -> {'stable' if p99['stable'] else 'NOT stable'}"
          " (stable: max <= 2 x median and last / first <= 1.5)")
    print(f"errors: {v['errors']} {v['errorKinds'] or ''}")
    for n, text in result["logs"]:
        print(f"  logged {n} x {text}")
    print(f"verdict: {'PASS' if v['passed'] else 'FAIL'} (memory {'flat' if v['memoryFlat'] else 'NOT flat'}, "
          f"p99 {'stable' if p99['stable'] else 'NOT stable'}, {v['errors']} errors)")
    print(json.dumps(result))


async def run(stack: Stack, args: argparse.Namespace) -> None:
    token, pki = await tenant_with_pki(stack)
    bodies = issue_bodies(pki.profile_id, make_csrs(args.csrs))
    failures: collections.Counter[str] = collections.Counter()
    rate: float = args.rate or 0.0
    connector = aiohttp.TCPConnector(limit=max(args.clients * 2, int(rate) * 2, 256))
    timeout = aiohttp.ClientTimeout(total=30)
    capacity = None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        one = single_issuer(session, stack.api_url, token, bodies, failures)
        await drive(3, args.clients, one)
        if not rate:
            latencies, errors, seconds = await drive(args.capacity_seconds, args.clients, one)
            capacity = summarize(f"capacity, {args.clients} clients", latencies, errors, seconds)
            rate = round(capacity.per_second / 2, 1)
            print(f"capacity {capacity.per_second}/s ({errors} errors, p99 {capacity.p99_ms} ms): soaking at {rate}/s")
        failures.clear()
        per_window = Windows(args.window, args.duration)
        samples: list[Sample] = []
        conn = await asyncpg.connect(stack.database_url)
        try:
            redis_pids = redis_server(stack)
            watching = asyncio.ensure_future(sampler(stack, conn, args.window, samples, redis_pids))
            _, _, seconds = await drive_open_loop(args.duration, rate, one,
                                                  per_window.record)
            watching.cancel()
            try:
                await watching
            except asyncio.CancelledError:
                pass
            samples.append(await sample(stack, conn, seconds, redis_pids))
        finally:
            await conn.close()
    wins = per_window.summary()
    settle = args.settle if args.settle is not None else (60.0 if args.duration >= 180 else args.duration / 3)
    result = {"rate": rate, "duration": args.duration, "window": args.window, "settle": settle,
              "flat_percent": args.flat_percent, "capacity": asdict(capacity) if capacity else None,
              "issued": sum(w.issued for w in wins), "seconds": round(seconds, 1),
              "verdict": verdict(samples, wins, settle, args.flat_percent, failures),
              "logs": log_digest(stack),
              "windows": [asdict(w) for w in wins], "samples": [asdict(s) for s in samples]}
    print_report(result, samples, wins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of soak (600)")
    parser.add_argument("--rate", type=float, default=None, help="requests a second (default: half the capacity)")
    parser.add_argument("--clients", type=int, default=16, help="clients of the capacity run (16)")
    parser.add_argument("--capacity-seconds", type=float, default=10)
    parser.add_argument("--window", type=float, default=10, help="seconds per window and memory sample (10)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds not judged at the start (60; a third of runs shorter than 180 s)")
    parser.add_argument("--flat-percent", type=float, default=10)
    parser.add_argument("--csrs", type=int, default=20000, help="pre-made CSRs, sent again in turn (20000)")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--no-beat", action="store_true", help="without the scheduler (kms-pki beat)")
    args = parser.parse_args()
    # With beat, as deployed: its periodic tasks (the reconciler, renewal, CRLs, the vacuum of
    # worker.maintenance when the server's autovacuum is off) run during the soak, as they would in service.
    stack = start_stack("soak", worker_concurrency=args.worker_concurrency, beat=not args.no_beat)
    try:
        asyncio.run(run(stack, args))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
