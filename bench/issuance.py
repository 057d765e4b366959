"""Issuance benchmark: N concurrent clients, each submitting a fresh EC P-256 CSR with ?wait=10, for a
fixed time, against a stack of its own (own database, private Redis db, API and Celery worker).

    .venv/bin/python -m bench.issuance --clients 16 --duration 20
    .venv/bin/python -m bench.issuance --rate 200 --duration 20    # open loop: 200 requests/s arrive

Prints sustained certificates per second and p50/p99 submit-to-issued latency, as a table and JSON.
With ``--rate`` the requests arrive at that rate whatever the answers do (an open loop), which is how a
fleet's latency is seen: a closed loop of N clients slows its own arrivals when the service slows.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from bench.common import (
    drive,
    drive_open_loop,
    issue_bodies,
    make_csrs,
    print_table,
    single_issuer,
    summarize,
    tenant_with_pki,
)
from tests.stack import Stack


async def run(stack: Stack, clients: int, duration: float, warmup: float, rate: float | None = None) -> None:
    token, pki = await tenant_with_pki(stack)
    # Enough fresh CSRs for ~1,500 certificates/s; beyond that they are reused (each is still a new request).
    csrs = make_csrs(int(1500 * (duration + warmup)))
    bodies = issue_bodies(pki.profile_id, csrs)
    connector = aiohttp.TCPConnector(limit=max(clients * 2, int(rate or 0) * 2))
    async with aiohttp.ClientSession(connector=connector) as session:
        one = single_issuer(session, stack.api_url, token, bodies)
        if warmup:
            await drive(warmup, clients, one)
        if rate:
            latencies, errors, seconds = await drive_open_loop(duration, rate, one)
            name = f"single, open loop {rate:g}/s"
        else:
            latencies, errors, seconds = await drive(duration, clients, one)
            name = f"single, {clients} clients"
    print_table([summarize(name, latencies, errors, seconds)], {"clients": clients, "rate": rate, "duration": duration})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--rate", type=float, default=None, help="open loop: this many requests a second")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--worker-pool", default="prefork", help="Celery pool: prefork, solo, threads")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each with its own pool)")
    args = parser.parse_args()
    stack = Stack(name="bench", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        stack.start_api()
        for n in range(args.workers):
            stack.start_worker(name=f"worker{n}", concurrency=args.worker_concurrency,
                               extra=["--pool", args.worker_pool])
        asyncio.run(run(stack, args.clients, args.duration, args.warmup, args.rate))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
