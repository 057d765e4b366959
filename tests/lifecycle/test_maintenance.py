"""Beat's vacuum task (worker.maintenance): with the PostgreSQL server's autovacuum off it vacuums and
analyzes the tables whose dead or changed rows pass its thresholds, and only those; with autovacuum on it
does nothing, and autovacuum takes the requests table sooner than its default (migration 0023). On a
database of its own, migrated as the service migrates it, on the real server: which of the first two
tests runs depends on how that server is configured (the other is skipped, saying why)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.db.migrate import drop_database, migrate
from tests.stack import PG_BASE
from worker import maintenance


async def _autovacuum_on() -> bool:
    conn = await asyncpg.connect(f"{PG_BASE}/postgres")
    try:
        return bool(await conn.fetchval("SELECT current_setting('autovacuum')::boolean"))
    finally:
        await conn.close()


AUTOVACUUM_ON = asyncio.run(_autovacuum_on())


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = f"{PG_BASE}/kms_maint_{secrets.token_hex(4)}"
    await migrate(url)
    try:
        yield url
    finally:
        await drop_database(url)


async def _stats(conn: asyncpg.Connection, table: str) -> Any:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchrow("SELECT n_dead_tup, n_mod_since_analyze, last_vacuum, last_analyze"
                               "  FROM pg_stat_user_tables WHERE relname = $1", table)


async def _make_dead_rows(url: str) -> None:
    """2,000 serials inserted and 1,500 deleted: 1,500 dead rows against 500 live ones."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO issued_serials (issuer_id, serial_number)"
                           " SELECT gen_random_uuid(), i::text FROM generate_series(1, 2000) AS i")
        await conn.execute("DELETE FROM issued_serials WHERE serial_number::int <= 1500")
        await conn.execute("SELECT pg_stat_force_next_flush()")  # the counts reach the statistics now
    finally:
        await conn.close()


@pytest.mark.skipif(AUTOVACUUM_ON, reason="the server's autovacuum is on: the task leaves every table to it")
async def test_with_autovacuum_off_the_tables_past_the_thresholds_are_vacuumed_and_no_others(database: str) -> None:
    await _make_dead_rows(database)
    conn = await asyncpg.connect(database)
    try:
        before = await _stats(conn, "issued_serials")
        assert before["n_dead_tup"] == 1500 and before["last_vacuum"] is None

        done = await maintenance.vacuum_if_needed(conn)

        assert not done.autovacuum
        assert "issued_serials" in done.vacuumed and "issued_serials" in done.analyzed
        after = await _stats(conn, "issued_serials")
        assert after["n_dead_tup"] == 0 and after["last_vacuum"] is not None and after["last_analyze"] is not None
        # A table nobody wrote to is not touched.
        assert "certificates" not in done.vacuumed + done.analyzed
        untouched = await _stats(conn, "certificates")
        assert untouched["last_vacuum"] is None and untouched["last_analyze"] is None

        # The next round finds nothing left to do there.
        again = await maintenance.vacuum_if_needed(conn)
        assert "issued_serials" not in again.vacuumed + again.analyzed
    finally:
        await conn.close()


@pytest.mark.skipif(not AUTOVACUUM_ON, reason="the server's autovacuum is off: the task does its work (the other test)")
async def test_with_autovacuum_on_the_task_does_nothing(database: str) -> None:
    await _make_dead_rows(database)
    conn = await asyncpg.connect(database)
    try:
        done = await maintenance.vacuum_if_needed(conn)
        assert done == maintenance.Maintained(True, [], [])
    finally:
        await conn.close()


async def test_autovacuum_takes_the_requests_table_at_5_percent_dead_rows_not_the_default_20(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'certificate_requests'::regclass")
        assert sorted(options) == ["autovacuum_analyze_scale_factor=0.05", "autovacuum_vacuum_scale_factor=0.05"]
    finally:
        await conn.close()
