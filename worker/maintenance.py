"""Vacuuming the service's tables when the PostgreSQL server does not (``autovacuum = off``).

Every certificate leaves dead row versions behind: its request is updated twice on the way to issued
(claimed, then issued), and the partial indexes of open requests, which every claim scans oldest first,
keep an entry for each request long since done until a vacuum removes it. PostgreSQL's autovacuum does
that; a server run with it off (some CI and benchmark set-ups are) removes nothing, and issuance slows
down by the minute: ``bench.soak`` at 210 requests/s saw the median latency go from 17 ms to 50 ms in ten
minutes, with every other figure flat.

So beat runs ``vacuum_if_needed`` every ``KMS_VACUUM_INTERVAL_SECONDS`` (60; 0 turns it off). With
autovacuum on it does nothing at all. With it off it does what autovacuum would, on this database's own
tables only: VACUUM a table once its dead rows pass 50 + 5 % of its live ones (autovacuum's default is
20 %, too lax for a queue: migration 0023 sets 5 % for the requests table when autovacuum is on), ANALYZE
one once its changes since the last analyze pass 50 + 10 %. It warns once per process that it is doing
the server's job. ``SKIP_LOCKED``: a table another vacuum holds is left to it.
And it paces itself as autovacuum does (``vacuum_cost_delay`` 2 ms per ``vacuum_cost_limit`` 200): unpaced,
each minute's vacuum of the requests table ran flat out for about 2 s, and the issuance p99 of that
window doubled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger("kms.worker")

VACUUM_BASE, VACUUM_SCALE = 50, 0.05
ANALYZE_BASE, ANALYZE_SCALE = 50, 0.10
_warned = False


@dataclass(frozen=True)
class Maintained:
    autovacuum: bool  # the server vacuums by itself: nothing was done
    vacuumed: list[str]
    analyzed: list[str]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def vacuum_if_needed(conn: asyncpg.Connection) -> Maintained:
    """One round (see the module's docstring). ``conn`` must not be in a transaction: VACUUM cannot run
    inside one."""
    global _warned
    if await conn.fetchval("SELECT current_setting('autovacuum')::boolean"):
        return Maintained(True, [], [])
    if not _warned:
        log.warning("autovacuum is off on this PostgreSQL server: beat vacuums the service's tables itself "
                    "(KMS_VACUUM_INTERVAL_SECONDS); turn autovacuum on, and this stops")
        _warned = True
    rows = await conn.fetch(
        "SELECT * FROM (SELECT relname, n_dead_tup > $1 + $2 * n_live_tup AS needs_vacuum,"
        "                      n_mod_since_analyze > $3 + $4 * n_live_tup AS needs_analyze"
        "                 FROM pg_stat_user_tables WHERE schemaname = current_schema()) t"
        " WHERE needs_vacuum OR needs_analyze ORDER BY relname", VACUUM_BASE, VACUUM_SCALE, ANALYZE_BASE, ANALYZE_SCALE)
    if not rows:
        return Maintained(False, [], [])
    vacuumed = [r["relname"] for r in rows if r["needs_vacuum"]]
    analyzed = [r["relname"] for r in rows if r["needs_analyze"]]
    await conn.execute("SET vacuum_cost_delay = '2ms'; SET vacuum_cost_limit = 200")
    try:
        for row in rows:
            if row["needs_vacuum"]:
                await conn.execute(f"VACUUM (SKIP_LOCKED{', ANALYZE' if row['needs_analyze'] else ''}) "
                                   f"{_quoted(row['relname'])}")
            else:
                await conn.execute(f"ANALYZE (SKIP_LOCKED) {_quoted(row['relname'])}")
    finally:
        if not conn.is_closed():
            await conn.execute("RESET vacuum_cost_delay; RESET vacuum_cost_limit")
    log.info("tables vacuumed", extra={"vacuumed": vacuumed, "analyzed": analyzed})
    return Maintained(False, vacuumed, analyzed)
