"""Migration 0008 on a database that already has projects and tokens: slugs and maximum ends filled in."""

from __future__ import annotations

import asyncpg

from shared.access import slug_of
from shared.db.migrate import drop_database, ensure_database, migrate, migration_files
from tests.stack import Stack

NAMES = ["Payments Team", "payments team", "!!!", "Été", "ops"]


async def _database_before_0008(stack: Stack) -> asyncpg.Connection:
    await ensure_database(stack.database_url)
    conn = await asyncpg.connect(stack.database_url)
    await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                       " applied_at timestamptz NOT NULL DEFAULT now())")
    for version, sql in migration_files():
        if version >= "0008":
            break
        await conn.execute(sql)
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    return conn


async def test_migration_0008_backfills_unique_slugs_from_names_and_token_maxima_from_their_ends() -> None:
    stack = Stack(name="migrate0008")  # its own database
    try:
        conn = await _database_before_0008(stack)
        try:
            ids = [await conn.fetchval("INSERT INTO projects (name, created_at) VALUES ($1, now() + $2 * interval"
                                       " '1 second') RETURNING id", name, i) for i, name in enumerate(NAMES)]
            identity = await conn.fetchval("INSERT INTO identities (project_id, name, role, client_id, secret_hash)"
                                           " VALUES ($1, 'admin', 'admin', 'kms_ci_x', 'x') RETURNING id", ids[0])
            await conn.execute("INSERT INTO access_tokens (token_digest, identity_id, expires_at)"
                               " VALUES ('\\x01', $1, now() + interval '1 hour')", identity)
            await migrate(stack.database_url)
            slugs = {r["id"]: r["slug"] for r in await conn.fetch("SELECT id, slug FROM projects")}
            ends = await conn.fetchrow("SELECT expires_at, max_expires_at FROM access_tokens")
        finally:
            await conn.close()
        got = [slugs[i] for i in ids]
        # The oldest project of a slug keeps it bare; the later one gets its id's start appended.
        assert got[0] == "payments-team" == slug_of(NAMES[0])
        assert got[1] == f"payments-team-{ids[1].hex[:12]}"
        assert got[2:] == ["project", "t", "ops"] == [slug_of(n) for n in NAMES[2:]]
        assert ends["max_expires_at"] == ends["expires_at"]
    finally:
        await drop_database(stack.database_url)
