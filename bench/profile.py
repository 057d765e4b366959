"""Where the time goes on the single-request path: CPU per certificate by process, and py-spy's hottest
frames for the API and the worker processes.

    .venv/bin/python -m bench.profile --clients 16 --duration 15
    .venv/bin/python -m bench.profile --batch 10000

Starts a private stack (as bench.issuance does), drives fresh EC P-256 CSRs with ?wait=10, and meanwhile
reads the CPU time (/proc) of every process involved: the API, the Celery worker and its pool processes,
PostgreSQL's backends, Redis, and this load generator. With py-spy installed (``pip install py-spy``) it
also samples the API and the worker processes and prints each one's top frames by own time and by
inclusive time within this project's code. Figures are ms of CPU per issued certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import ISSUE, drive, make_csrs, process_groups, submit_batch, tenant_with_pki
from tests.stack import Stack

TICK = os.sysconf("SC_CLK_TCK")
OURS = ("api/", "worker/", "shared/")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _top(raw: Path, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if any(f" ({p}" in frame or f"/{p}" in frame for p in OURS):
                inclusive[frame] += n
    return own.most_common(limit), inclusive.most_common(limit), total


async def run(stack: Stack, clients: int, duration: float, warmup: float, spy: str | None, limit: int,
              idle: bool) -> None:
    token, pki = await tenant_with_pki(stack)
    csrs = make_csrs(int(1500 * (duration + warmup)))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps({"profileId": pki.profile_id, "csr": c}) for c in csrs]
    issued = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2)) as session:
        async def one(i: int) -> bool:
            nonlocal issued
            async with session.post(stack.api_url + ISSUE, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                ok = r.status == 200
                issued += ok
                return ok

        if warmup:
            await drive(warmup, clients, one)
        with Sampling(stack, spy, duration, idle) as sampling:
            issued = 0
            _, errors, _ = await drive(duration, clients, one)
    sampling.report(issued, f"{errors} errors", limit)


async def run_batch(stack: Stack, items: int, spy: str | None, limit: int, idle: bool) -> None:
    """One batch of ``items`` CSRs, sampled from the POST to the moment it reports completed. A batch of
    1,000 first starts the API's evaluator processes, so they are sampled too."""
    token, pki = await tenant_with_pki(stack)
    async with aiohttp.ClientSession() as session:
        await submit_batch(session, stack.api_url, token, pki.profile_id, make_csrs(1000, "warmup.test"))
        csrs = make_csrs(items)
        with Sampling(stack, spy, None, idle) as sampling:
            view, submitted = await submit_batch(session, stack.api_url, token, pki.profile_id, csrs)
    posted = submitted - sampling.start
    sampling.report(view["issued"], f"{view['failed']} failed; the POST (evaluate and store every item) took "
                    f"{posted:.2f} s, signing finished {sampling.elapsed - posted:.2f} s later", limit)


class Sampling:
    """CPU time of every process of the stack over a ``with`` block, and py-spy's samples of the API
    (with its evaluator processes) and the worker's pool processes."""

    def __init__(self, stack: Stack, spy: str | None, duration: float | None, idle: bool = False) -> None:
        self.stack, self.spy, self.duration, self.idle = stack, spy, duration, idle
        self.tmp = Path(tempfile.mkdtemp(prefix="kms-profile-"))
        self.spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Sampling:
        self.groups = process_groups(self.stack)
        self.before = {name: sum(_cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        if self.spy:
            for name in ("api", "worker (pool processes)"):
                for pid in self.groups[name]:
                    out = self.tmp / f"{pid}.txt"
                    until = ["--duration", str(int(self.duration))] if self.duration else []
                    until += ["--idle"] if self.idle else []
                    self.spies.append((f"{name} {pid}", out, subprocess.Popen(
                        [self.spy, "record", "--pid", str(pid), *until, "--rate", "200", "--format", "raw",
                         "--nonblocking", "--output", str(out)],
                        stdout=subprocess.DEVNULL, stderr=(self.tmp / f"{pid}.err").open("wb"))))
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.start
        self.after = {name: sum(_cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        for _, _, proc in self.spies:
            if self.duration is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled when interrupted
            proc.wait(timeout=60)

    def report(self, issued: int, outcome: str, limit: int) -> None:
        n = max(issued, 1)
        print(f"{issued} certificates in {self.elapsed:.1f} s = {issued / self.elapsed:.0f}/s, {outcome}, "
              f"{os.cpu_count()} cores")
        print(f"{'process':28} {'CPU s':>8} {'ms/cert':>8} {'cores':>6}")
        rows = {name: self.after[name] - self.before[name] for name in self.groups}
        for name, cpu in sorted(rows.items(), key=lambda kv: -kv[1]):
            print(f"{name:28} {cpu:8.2f} {1000 * cpu / n:8.2f} {cpu / self.elapsed:6.2f}")
        total = sum(rows.values())
        print(f"{'total':28} {total:8.2f} {1000 * total / n:8.2f} {total / self.elapsed:6.2f}")
        for label, out, _ in self.spies:
            if not out.exists():
                err = out.with_suffix(".err")
                print(f"\n== {label}: no samples; py-spy said: "
                      f"{err.read_text(errors='replace').strip()[-500:] if err.exists() else '-'}")
                continue
            own, inclusive, samples = _top(out, limit)
            if not samples:
                continue
            print(f"\n== {label}: {samples} samples; top frames by own time")
            for frame, count in own:
                print(f"  {100 * count / samples:5.1f}%  {frame[:150]}")
            print(f"-- {label}: this project's frames by inclusive time")
            for frame, count in inclusive:
                print(f"  {100 * count / samples:5.1f}%  {frame[:150]}")
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--worker-concurrency", type=int, default=2, help="signing processes of the worker")
    parser.add_argument("--idle", action="store_true",
                        help="py-spy samples waiting threads too (where the time goes that is not CPU)")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="profile one batch of N CSRs instead of single requests")
    parser.add_argument("--no-spy", action="store_true", help="CPU per process only, no py-spy sampling")
    args = parser.parse_args()
    spy = None if args.no_spy else (
        shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent)))
    stack = Stack(name="profile", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        stack.start_api()
        stack.start_worker(name="worker", concurrency=args.worker_concurrency)
        if args.batch:
            asyncio.run(run_batch(stack, args.batch, spy, args.top, args.idle))
        else:
            asyncio.run(run(stack, args.clients, args.duration, args.warmup, spy, args.top, args.idle))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
