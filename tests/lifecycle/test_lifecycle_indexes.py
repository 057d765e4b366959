"""Issue 10: indexes keep the revocation lookups (a serial per issuer, as OCSP asks it; the CRL's reads)
and the renewal scan flat at a million stored certificates. In a database of its own, migrated as the
service migrates it, a million certificates (see ``stored_certificates``); each lookup, run by the
service's own function on a connection that explains every statement it sends, reads through its
index, never scans the table and reads no row it does not return. What that costs in milliseconds is
measured by ``python -m bench.lifecycle_indexes`` (a benchmark, not a timed test: this machine drifts)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from shared.db.migrate import drop_database, migrate
from tests.lifecycle.stored_certificates import (
    MILLION,
    PROBES,
    Population,
    Probe,
    explain,
    populate,
    take_due,
)
from tests.stack import PG_BASE

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Stored:
    url: str
    population: Population


@pytest.fixture(scope="module")
def million() -> Iterator[Stored]:
    url = f"{PG_BASE}/kms_indexes_{secrets.token_hex(4)}"

    async def build() -> Population:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            return await populate(conn, MILLION)
        finally:
            await conn.close()

    try:
        yield Stored(url, asyncio.run(build()))
    finally:
        asyncio.run(drop_database(url))


def probe(name: str) -> Probe:
    return next(p for p in PROBES if p.name == name)


async def assert_flat(stored: Stored, which: Probe, population: Population | None = None) -> None:
    pop = population or stored.population
    conn = await asyncpg.connect(stored.url)
    try:
        shapes = await explain(conn, which, pop)
    finally:
        await conn.close()
    assert len(shapes) == 1, shapes  # one statement
    [shape] = shapes
    assert shape.indexes == {which.index} and shape.seq_scans == 0, shape
    assert shape.rows_read <= which.bound(pop), (shape, which.bound(pop))


async def test_a_serials_revocation_status_is_one_row_read_through_the_issuer_serial_index(million: Stored) -> None:
    await assert_flat(million, probe("revocation lookup of a serial"))


async def test_a_serial_never_issued_reads_no_row(million: Stored) -> None:
    await assert_flat(million, probe("revocation lookup, serial never issued"))


async def test_a_crls_entries_are_read_through_the_revoked_by_issuer_index_and_are_all_it_reads(
        million: Stored) -> None:
    assert million.population.revoked_unexpired > 1000  # a CRL of some length
    await assert_flat(million, probe("CRL entries of the busiest CA"))


async def test_the_newest_revocation_of_a_ca_is_one_entry_of_the_latest_revocation_index(million: Stored) -> None:
    await assert_flat(million, probe("newest revocation of the busiest CA"))


async def test_a_renewal_scan_batch_reads_only_its_batch_through_the_renewal_due_index(million: Stored) -> None:
    assert million.population.due > 1000  # more due than one batch takes
    await assert_flat(million, probe("renewal scan (one batch)"))


# Last: it changes the database the others read (the scan has taken every due certificate).
async def test_a_renewal_scan_with_nothing_due_reads_nothing_among_a_million(million: Stored) -> None:
    conn = await asyncpg.connect(million.url)
    try:
        after_the_scan = await take_due(conn)
    finally:
        await conn.close()
    assert after_the_scan.due == 0 and after_the_scan.certificates == MILLION
    await assert_flat(million, probe("renewal scan (one batch)"), after_the_scan)
