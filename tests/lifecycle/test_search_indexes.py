"""The substring searches read their trigram indexes (migration 0022), never a whole table: the request
search (certificate common names, and the common names of requests without a certificate) and a
profile's certificate search (common name or serial number). In a database of its own, migrated as the
service migrates it, holding ``STORED`` requests (one in ten failed, so without a certificate) and their
certificates, loaded and ANALYZEd as ``stored_certificates`` loads them; each search runs as the service
runs it (``shared.db``), on a connection that explains every statement with the arguments it is given,
and no statement tests the pattern row by row in a sequential scan.
What a search costs at a million is measured by ``python -m bench.million``, not here."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from shared.db import policies as policies_db
from shared.db import requests as requests_db
from shared.db.migrate import drop_database, migrate
from shared.db.pool import connect
from tests.lifecycle.stored_certificates import Explaining, bulk_load, create_fixtures, nodes
from tests.stack import PG_BASE

STORED = 50_000
SEARCHED = ("certificates", "certificate_requests")

# Request i = 1..n asks for common name host<i>.search.test; all but every tenth (failed) are issued, their
# certificate carrying the same name and a serial of its own.
_REQUESTS = """
INSERT INTO certificate_requests (id, project_id, profile_id, status, attributes, server_key, error_message,
                                  certificate_id)
SELECT md5('r' || i)::uuid, $1, $2, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'issued' END,
       jsonb_build_object('commonName', 'host' || i || '.search.test'), true,
       CASE WHEN i % 10 = 0 THEN 'refused' END, CASE WHEN i % 10 <> 0 THEN md5('c' || i)::uuid END
  FROM generate_series(1, $3::int) AS i
"""
_CERTIFICATES = """
INSERT INTO certificates (id, project_id, profile_id, request_id, ca_id, serial_number, common_name, key_algorithm,
                          certificate_pem, chain_pem, not_before, not_after)
SELECT md5('c' || i)::uuid, $1, $2, md5('r' || i)::uuid, $4, md5('s' || i) || left(md5('t' || i), 8),
       'host' || i || '.search.test', 'EC_prime256v1', 'placeholder', 'placeholder', now(), now() + interval '90 days'
  FROM generate_series(1, $3::int) AS i WHERE i % 10 <> 0
"""


@dataclass(frozen=True)
class Stored:
    url: str
    project: UUID
    profile: UUID


@pytest.fixture(scope="module")
def stored() -> Iterator[Stored]:
    url = f"{PG_BASE}/kms_search_{secrets.token_hex(4)}"

    async def build() -> Stored:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            project, profile, cas = await create_fixtures(conn)
            async with bulk_load(conn, list(SEARCHED)):
                await conn.execute(_REQUESTS, project, profile, STORED)
                await conn.execute(_CERTIFICATES, project, profile, STORED, cas[0])
            await conn.execute("ANALYZE")
            return Stored(url, project, profile)
        finally:
            await conn.close()

    try:
        yield asyncio.run(build())
    finally:
        asyncio.run(drop_database(url))


def scans(plan: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(node type, table, index) of every scan of the searched tables and every index scan of the plan."""
    return [(n["Node Type"], n.get("Relation Name") or "", n.get("Index Name"))
            for n in nodes(plan["Plan"]) if n.get("Relation Name") in SEARCHED or "Index Name" in n]


def patterns_read_row_by_row(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The sequential scans of a searched table that test the pattern (ILIKE, ``~~*``) on each row. (A
    sequential scan that only joins, as a hash join may read the certificates of a small table, is the
    planner's choice of join at this size, not the search reading every row.)"""
    return [n for n in nodes(plan["Plan"])
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in SEARCHED and "~~*" in n.get("Filter", "")]


async def explained(url: str, run: Any) -> tuple[Any, list[dict[str, Any]]]:
    conn = await connect(url)
    try:
        explaining = Explaining(conn)
        return await run(explaining), explaining.plans
    finally:
        await conn.close()


async def test_request_search_reads_both_trigram_indexes_and_no_whole_table(stored: Stored) -> None:
    search = requests_db.RequestFilter(project_id=stored.project, search="HOST424")

    (rows, total), plans = await explained(
        stored.url, lambda conn: requests_db.search_requests(conn, search, offset=0, limit=20))

    # Every i starting with 424, those ending in 0 too: failed, counted by the name they asked for.
    matching = {f"host{i}.search.test" for i in range(1, STORED + 1) if str(i).startswith("424")}
    assert total == len(matching) and len(rows) == 20 and {r.common_name for r in rows} <= matching
    assert len(plans) == 2  # the count, the page
    for plan in plans:
        used = scans(plan)
        assert ("Bitmap Index Scan", "", "certificates_common_name_trgm_idx") in used, used
        assert ("Bitmap Index Scan", "", "certificate_requests_common_name_trgm_idx") in used, used
        assert not patterns_read_row_by_row(plan), used


async def test_request_search_by_id_reads_the_request_by_its_primary_key(stored: Stored) -> None:
    wanted = UUID(await _one(stored.url, "SELECT md5('r' || 777)::uuid::text"))
    search = requests_db.RequestFilter(project_id=stored.project, search=str(wanted))

    (rows, total), plans = await explained(
        stored.url, lambda conn: requests_db.search_requests(conn, search, offset=0, limit=20))

    assert total == 1 and [r.request.id for r in rows] == [wanted]
    for plan in plans:
        used = scans(plan)
        assert ("Index Scan", "certificate_requests", "certificate_requests_pkey") in used, used
        assert not patterns_read_row_by_row(plan), used


async def test_profile_certificate_search_reads_the_trigram_index_for_names_and_serials(stored: Stored) -> None:
    serial_part = (await _one(stored.url, "SELECT md5('s' || 4242)"))[4:16]

    (by_name, name_total), name_plans = await explained(
        stored.url, lambda conn: policies_db.profile_certificates(conn, stored.profile, offset=0, limit=20,
                                                                  search="host4242."))
    (by_serial, serial_total), serial_plans = await explained(
        stored.url, lambda conn: policies_db.profile_certificates(conn, stored.profile, offset=0, limit=20,
                                                                  search=serial_part.upper()))

    assert name_total == 1 and [c.common_name for c in by_name] == ["host4242.search.test"]
    assert serial_total == 1 and [c.common_name for c in by_serial] == ["host4242.search.test"]
    for plan in name_plans + serial_plans:  # common_name ILIKE OR serial_number ILIKE: a BitmapOr of both
        used = scans(plan)
        assert ("Bitmap Index Scan", "", "certificates_common_name_trgm_idx") in used, used
        assert ("Bitmap Index Scan", "", "certificates_serial_trgm_idx") in used, used
        assert not patterns_read_row_by_row(plan), used


async def _one(url: str, query: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        value: str = await conn.fetchval(query)
        return value
    finally:
        await conn.close()
