"""Lookup and scan latency of the certificate lifecycle with N certificates stored, against an empty table.

    .venv/bin/python -m bench.lifecycle_indexes --certificates 1000000

Two databases of its own, migrated as the service migrates (no API, no worker): one holding only a
project, its CAs and a profile, one with N certificates as ``tests/lifecycle/stored_certificates.py``
makes them (a year of 90-day certificates, 1 % revoked, half auto-renewing). In each, every lifecycle
read of the certificates table, by the service's own function: the index its plan uses, the rows it
reads, and p50/p95 over ``--runs`` runs. Then the same scan once it has taken every due certificate (the
per-minute scan's usual case). Prints a table, and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from dataclasses import asdict
from typing import Any

import asyncpg

from shared.db.migrate import drop_database, migrate
from tests.lifecycle.stored_certificates import PROBES, Population, Probe, explain, populate, take_due, time_probe
from tests.stack import PG_BASE


async def measure(conn: asyncpg.Connection, probe: Probe, pop: Population, runs: int) -> dict[str, Any]:
    shapes = await explain(conn, probe, pop)
    latency = await time_probe(conn, probe, pop, runs)
    return {"indexes": sorted(i for s in shapes for i in s.indexes), "rowsRead": sum(s.rows_read for s in shapes),
            "seqScans": sum(s.seq_scans for s in shapes), **asdict(latency)}


async def run(n: int, runs: int) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {p.name: {} for p in PROBES}
    results["renewal scan, nothing due"] = {}
    load_seconds = 0.0
    for label, count in (("empty", 0), ("stored", n)):
        url = f"{PG_BASE}/kms_bench_indexes_{secrets.token_hex(4)}"
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            start = time.monotonic()
            pop = await populate(conn, count)
            if count:
                load_seconds = time.monotonic() - start
            for probe in PROBES:
                results[probe.name][label] = await measure(conn, probe, pop, runs)
            scan = next(p for p in PROBES if p.name.startswith("renewal scan"))
            results["renewal scan, nothing due"][label] = await measure(conn, scan, await take_due(conn), runs)
        finally:
            await conn.close()
            await drop_database(url)
    return {"certificates": n, "loadSeconds": round(load_seconds, 1), "runs": runs, "probes": results}


def print_table(result: dict[str, Any]) -> None:
    n = result["certificates"]
    header = (f"{'lookup':<42}{'index':<38}{'rows empty/' + format(n, ','):>22}"
              f"{'p50 ms empty/N':>18}{'p95 ms empty/N':>18}")
    print(header)
    print("-" * len(header))
    for name, at in result["probes"].items():
        empty, stored = at["empty"], at["stored"]
        index = ",".join(stored["indexes"]) or "-"
        print(f"{name:<42}{index:<38}{str(empty['rowsRead']) + ' / ' + str(stored['rowsRead']):>22}"
              f"{str(empty['p50_ms']) + ' / ' + str(stored['p50_ms']):>18}"
              f"{str(empty['p95_ms']) + ' / ' + str(stored['p95_ms']):>18}")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print_table(asyncio.run(run(args.certificates, args.runs)))


if __name__ == "__main__":
    main()
