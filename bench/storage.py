"""Bytes per stored certificate: a private stack issues one batch of EC P-256 CSRs under a two-level CA
chain, then PostgreSQL says how much the certificates (and their shared chains, where stored apart) take.

    .venv/bin/python -m bench.storage --certificates 5000

Prints the table and index bytes per certificate (pg_total_relation_size of certificates, plus
certificate_chains when it exists) and the average row (pg_column_size), as a table and as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import asyncpg

from bench.common import BATCHES, make_csrs, tenant_with_pki
from tests.stack import Stack


async def run(stack: Stack, n: int) -> dict[str, float]:
    token, pki = await tenant_with_pki(stack)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"profileId": pki.profile_id, "items": [{"csr": c} for c in make_csrs(n)]})
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.api_url + BATCHES, data=body, headers=headers) as r:
            batch = await r.json()
        while True:
            async with session.get(f"{stack.api_url}{BATCHES}/{batch['batchId']}?wait=30", headers=headers) as r:
                if (await r.json())["status"] == "completed":
                    break
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("VACUUM ANALYZE certificates")
        count = await conn.fetchval("SELECT count(*) FROM certificates")
        table = await conn.fetchval("SELECT pg_total_relation_size('certificates')")
        chains = await conn.fetchval("SELECT coalesce(pg_total_relation_size(to_regclass('certificate_chains')), 0)")
        row = await conn.fetchval("SELECT avg(pg_column_size(c.*)) FROM certificates c")
    finally:
        await conn.close()
    return {"certificates": count, "bytesPerCertificate": round((table + chains) / count),
            "averageRowBytes": round(float(row)), "sharedChainBytes": chains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=5000)
    args = parser.parse_args()
    stack = Stack(name="storage", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        stack.start_api()
        stack.start_worker()
        result = asyncio.run(run(stack, args.certificates))
    finally:
        stack.drop()
    print(f"{'certificates':>14}{'bytes/cert (table+indexes)':>30}{'avg row bytes':>16}")
    print(f"{result['certificates']:>14}{result['bytesPerCertificate']:>30}{result['averageRowBytes']:>16}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
