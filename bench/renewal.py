"""Server-driven renewal benchmark: N server-key certificates falling due at once, renewed by beat.

    .venv/bin/python -m bench.renewal --certificates 10000

Against a stack of its own: issues N certificates through a bulk batch (timed: the batch path's speed),
brings their renewal due date forward in the database (as time would), starts ``kms-pki beat`` and times
until every one of them has been renewed (its successor signed and linked). Prints both, as JSON too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import asyncpg

from bench.common import BATCHES, tenant_with_pki
from tests.api_client import ApiClient
from tests.pki_setup import PROFILES
from tests.stack import Stack


async def run(stack: Stack, n: int) -> None:
    token, pki = await tenant_with_pki(stack)
    async with aiohttp.ClientSession() as session:
        client = ApiClient(session, stack.api_url).with_token(token)
        r = await client.patch(f"{PROFILES}/{pki.profile_id}", {"apiConfig": {"autoRenew": True, "renewBeforeDays": 1}})
        assert r.status == 200, r.body
        items = [{"attributes": {"commonName": f"host{i}.example.test", "ttl": "3d",
                                 "altNames": [{"type": "dns_name", "value": f"host{i}.example.test"}]}}
                 for i in range(n)]
        t0 = time.monotonic()
        r = await client.post(BATCHES, {"profileId": pki.profile_id, "items": items})
        assert r.status == 202, r.body
        while True:
            done = await client.get(f"{BATCHES}/{r.body['batchId']}", params={"wait": "30"})
            if done.body["status"] == "completed":
                break
        issue_seconds = time.monotonic() - t0
        assert done.body["issued"] == n, done.body
    conn = await asyncpg.connect(stack.database_url)
    try:
        due = await conn.execute("UPDATE certificates SET renewal_due_at = now() - interval '1 second'"
                                 " WHERE project_id = $1::uuid AND auto_renew", pki.project_id)
        assert due == f"UPDATE {n}", due
        t0 = time.monotonic()
        stack.start_beat(env={"KMS_RENEWAL_INTERVAL_SECONDS": "1"})
        renewed = 0
        while renewed < n and time.monotonic() - t0 < 1800:
            await asyncio.sleep(0.5)
            renewed = await conn.fetchval("SELECT count(*) FROM certificates WHERE project_id = $1::uuid"
                                          " AND renewed_from_id IS NOT NULL", pki.project_id)
        renew_seconds = time.monotonic() - t0
        errors = await conn.fetchval("SELECT count(*) FROM certificates WHERE renewal_error IS NOT NULL")
    finally:
        await conn.close()
    result = {"certificates": n, "batchIssueSeconds": round(issue_seconds, 1),
              "renewedSeconds": round(renew_seconds, 1), "renewed": renewed, "renewalErrors": errors,
              "batchPerSecond": round(n / issue_seconds, 1), "renewalPerSecond": round(renewed / renew_seconds, 1)}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=10_000)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    stack = Stack(name="bench", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        stack.start_api()
        stack.start_worker(concurrency=args.worker_concurrency)
        asyncio.run(run(stack, args.certificates))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
