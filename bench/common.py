"""Shared pieces of the benchmarks: start a private stack, make a project and PKI, make CSRs, report."""

from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import asdict, dataclass
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


async def drive_open_loop(duration: float, rate: float, one: Any) -> tuple[list[float], int, float]:
    """Start ``one(i) -> bool`` ``rate`` times a second for ``duration`` seconds whether or not earlier
    calls have answered (an open loop: a slow answer does not slow the arrivals); latencies of successes."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async def timed(i: int) -> None:
        nonlocal errors
        t0 = loop.time()
        if await one(i):
            latencies.append(loop.time() - t0)
        else:
            errors += 1

    start = loop.time()
    tasks = []
    for i in range(int(duration * rate)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(timed(i)))
    await asyncio.gather(*tasks)
    return latencies, errors, loop.time() - start
