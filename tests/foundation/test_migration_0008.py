"""Migration 0008 on a database that already has projects, tokens and policies: slugs and maximum ends
filled in, policy maxima in minutes kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.access import slug_of
from shared.db.migrate import drop_database, ensure_database, migrate, migration_files
from tests.stack import Stack

NAMES = ["Payments Team", "payments team", "!!!", "Été", "ops"]


@pytest.fixture
async def before_0008() -> AsyncIterator[tuple[Stack, asyncpg.Connection]]:
    """A database of its own, migrated up to 0007."""
    stack = Stack(name="migrate0008")
    await ensure_database(stack.database_url)
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, sql in migration_files():
            if version >= "0008":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        yield stack, conn
    finally:
        await conn.close()
        await drop_database(stack.database_url)


async def _project(conn: asyncpg.Connection, name: str, order: int = 0) -> asyncpg.Record:
    return await conn.fetchval("INSERT INTO projects (name, created_at) VALUES ($1, now() + $2 * interval '1 second')"
                               " RETURNING id", name, order)


async def test_migration_0008_backfills_unique_slugs_from_names_and_token_maxima_from_their_ends(
        before_0008: tuple[Stack, asyncpg.Connection]) -> None:
    stack, conn = before_0008
    ids = [await _project(conn, name, i) for i, name in enumerate(NAMES)]
    identity = await conn.fetchval("INSERT INTO identities (project_id, name, role, client_id, secret_hash)"
                                   " VALUES ($1, 'admin', 'admin', 'kms_ci_x', 'x') RETURNING id", ids[0])
    await conn.execute("INSERT INTO access_tokens (token_digest, identity_id, expires_at)"
                       " VALUES ('\\x01', $1, now() + interval '1 hour')", identity)
    await migrate(stack.database_url)
    slugs = {r["id"]: r["slug"] for r in await conn.fetch("SELECT id, slug FROM projects")}
    got = [slugs[i] for i in ids]
    # The oldest project of a slug keeps it bare; the later one gets its id's start appended.
    assert got[0] == "payments-team" == slug_of(NAMES[0])
    assert got[1] == f"payments-team-{ids[1].hex[:12]}"
    assert got[2:] == ["project", "t", "ops"] == [slug_of(n) for n in NAMES[2:]]
    ends = await conn.fetchrow("SELECT expires_at, max_expires_at FROM access_tokens")
    assert ends["max_expires_at"] == ends["expires_at"]


async def test_migration_0008_rewrites_a_policy_maximum_in_minutes_to_seconds_as_m_now_means_months(
        before_0008: tuple[Stack, asyncpg.Connection]) -> None:
    stack, conn = before_0008
    project = await _project(conn, "p")
    rules = ['{"validity": {"max": "90m"}}', '{"validity": {"max": "90d"}}', '{"validity": null}', '{}']
    policies = [await conn.fetchval("INSERT INTO certificate_policies (project_id, name, rules)"
                                    " VALUES ($1, $2, $3::jsonb) RETURNING id", project, f"p{i}", r)
                for i, r in enumerate(rules)]
    await migrate(stack.database_url)
    stored = [json.loads(await conn.fetchval("SELECT rules::text FROM certificate_policies WHERE id = $1", p))
              for p in policies]
    assert stored == [{"validity": {"max": "5400s"}}, {"validity": {"max": "90d"}}, {"validity": None}, {}]
