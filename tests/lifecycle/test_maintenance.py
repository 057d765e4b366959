"""Beat's vacuum task (worker.maintenance): with the PostgreSQL server's autovacuum off it vacuums and
analyzes the tables whose dead or changed rows pass its thresholds, and only those; with autovacuum on it
does nothing, and autovacuum takes the requests table sooner than its default (migration 0023).

Whether autovacuum is on is a setting of the whole server, which no test may change on the shared one (the
other test process uses it meanwhile). So these tests start a PostgreSQL server of their own (the
machine's binaries, ``initdb`` into a temporary directory, a free port), set autovacuum on or off there as
each test needs, and migrate a database in it as the service migrates its own."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.migrate import drop_database, migrate
from tests.stack import free_port
from worker import maintenance


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    assert found, f"PostgreSQL's {name} is not installed"
    return found


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: as root, run them as the postgres user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A private PostgreSQL server; yields the URL of its postgres database."""
    directory = Path(tempfile.mkdtemp(prefix="kms-pg-"))
    data, port = directory / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
                   check=True, capture_output=True, timeout=120)
    options = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} -c fsync=off"
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"),
                                 "-w", "start"]), check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


async def _set_autovacuum(server: str, on: bool) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"ALTER SYSTEM SET autovacuum = {'on' if on else 'off'}")
        await conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous: until this session sees the new value, the task would not either.
        while await conn.fetchval("SELECT current_setting('autovacuum')::boolean") != on:
            await conn.execute("SELECT pg_sleep(0.05)")
    finally:
        await conn.close()


@pytest.fixture
async def database(server: str) -> AsyncIterator[str]:
    url = server.rsplit("/", 1)[0] + f"/kms_maint_{os.urandom(4).hex()}"
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


async def test_with_autovacuum_off_the_tables_past_the_thresholds_are_vacuumed_and_no_others(
        server: str, database: str) -> None:
    await _set_autovacuum(server, False)
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


async def test_with_autovacuum_on_the_task_does_nothing(server: str, database: str) -> None:
    await _set_autovacuum(server, True)
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
