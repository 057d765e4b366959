"""Issuance benchmark: N concurrent clients, each submitting a fresh EC P-256 CSR with ?wait=10, for a
fixed time, against a stack of its own (own database, private Redis db, API and Celery worker).

    .venv/bin/python -m bench.issuance --clients 16 --duration 20

Prints sustained certificates per second and p50/p99 submit-to-issued latency, as a table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from bench.common import drive, make_csrs, print_table, summarize, tenant_with_pki
from tests.stack import Stack

ISSUE = "/api/v1/cert-manager/certificates?wait=10"


async def run(stack: Stack, clients: int, duration: float, warmup: float) -> None:
    token, pki = await tenant_with_pki(stack)
    # Enough fresh CSRs for ~1,500 certificates/s; beyond that they are reused (each is still a new request).
    csrs = make_csrs(int(1500 * (duration + warmup)))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps({"profileId": pki.profile_id, "csr": c}) for c in csrs]
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> bool:
            async with session.post(stack.api_url + ISSUE, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                return r.status == 200

        if warmup:
            await drive(warmup, clients, one)
        latencies, errors, seconds = await drive(duration, clients, one)
    print_table([summarize(f"single, {clients} clients", latencies, errors, seconds)],
                {"clients": clients, "duration": duration})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
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
        asyncio.run(run(stack, args.clients, args.duration, args.warmup))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
