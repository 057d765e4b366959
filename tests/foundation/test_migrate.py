"""`kms-pki migrate` applies each migration exactly once, even when run by several processes at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg

from shared.db.migrate import drop_database, migration_files
from tests.stack import Stack


def test_three_concurrent_migrate_processes_apply_each_migration_once() -> None:
    stack = Stack(name="migrate")  # its own database, which does not exist yet
    try:
        procs = [
            subprocess.Popen([sys.executable, "-m", "api.cli", "migrate"], env=stack.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1].decode()[-2000:] for o in outputs]
        applied = [json.loads(out.strip().splitlines()[-1])["applied"] for out, _ in outputs]
        versions = [v for v, _ in migration_files()]
        # Exactly one process applied everything; the others found nothing to do.
        assert sorted(map(len, applied)) == [0, 0, len(versions)]

        async def rows() -> list[str]:
            conn = await asyncpg.connect(stack.database_url)
            try:
                return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            finally:
                await conn.close()

        assert sorted(asyncio.run(rows())) == versions

        again = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=stack.env,
                               capture_output=True, check=True, timeout=60)
        assert json.loads(again.stdout.strip().splitlines()[-1]) == {"applied": []}
    finally:
        asyncio.run(drop_database(stack.database_url))
