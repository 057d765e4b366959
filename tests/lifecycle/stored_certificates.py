"""A database holding many certificates, and the plans and latencies of the lifecycle's lookups in it.
Not a test module: ``test_lifecycle_indexes`` asserts on it, ``bench.lifecycle_indexes`` prints it.

The rows are made by PostgreSQL itself (``INSERT ... SELECT generate_series``), shaped like a year of a
busy CA: 90-day certificates issued every day (three in four expired by now), 97 % of them from one
issuing CA; one in a hundred revoked; half with a server-made key and auto-renewal 30 days before
expiry, those past their due date already renewed except about 1,500 in a million (more than one scan
batch) that the scan has still to take.
The load runs with foreign-key triggers off (as ``pg_restore --disable-triggers`` does: the certificates
name request ids no request row has), and ANALYZE follows it.

Each probe is a function of the service (``shared.db``), called as the service calls it, on a
connection that runs ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` before each statement it is given:
the plans are those of the exact SQL the code sends, with the code's own arguments.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Executor
from shared.db import ocsp as ocsp_db
from shared.db import requests as requests_db
from shared.db import revocation as revocation_db
from worker.renewal import BATCH

MILLION = 1_000_000
BIG_CA_SHARE = 97  # percent of the certificates issued by the busiest CA


@dataclass(frozen=True)
class Population:
    certificates: int
    big_ca: UUID
    other_cas: list[UUID]
    serials: list[str]  # of the busiest CA, spread over the whole table
    revoked_unexpired: int  # of the busiest CA: its CRL's length
    due: int  # due for renewal, not yet taken by a scan


async def create_fixtures(conn: asyncpg.Connection) -> tuple[UUID, UUID, list[UUID]]:
    """A project, a policy, four CAs and a profile: (project, profile, CAs)."""
    project = await conn.fetchval("INSERT INTO projects (name, slug) VALUES ('indexes', 'indexes') RETURNING id")
    cas = [await conn.fetchval(
        "INSERT INTO certificate_authorities (project_id, name, type, status, subject, key_algorithm,"
        " certificate_pem, encrypted_private_key) VALUES ($1, $2, 'root', 'active', '{}', 'EC_prime256v1',"
        " 'placeholder', '\\x00') RETURNING id", project, f"ca-{i}") for i in range(4)]
    policy = await conn.fetchval("INSERT INTO certificate_policies (project_id, name, rules) VALUES ($1, 'p', '{}')"
                                 " RETURNING id", project)
    profile = await conn.fetchval(
        "INSERT INTO certificate_profiles (project_id, slug, issuer_type, ca_id, certificate_policy_id)"
        " VALUES ($1, 'web', 'ca', $2, $3) RETURNING id", project, cas[0], policy)
    return project, profile, cas


# i = 1..n. Issued (i % 365) days and (i % 86400) seconds ago, for 90 days; certificate i of every hundred
# with i % 100 = 1 revoked a day after issuance; even ones server-key and auto-renewing 30 days before
# expiry, already renewed (by certificate i + 1) once due, except every 28th of those due but unexpired.
_LOAD = """
INSERT INTO certificates (id, project_id, profile_id, request_id, ca_id, serial_number, common_name, key_algorithm,
                          certificate_pem, chain_pem, not_before, not_after, encrypted_private_key, created_at,
                          revoked_at, revocation_reason, auto_renew, renew_before_days, renewal_due_at, renewed_by_id)
SELECT md5('c' || i)::uuid, $1, $2, (left(md5('c' || i), 28) || 'beef')::uuid,
       CASE WHEN i % 100 < $5 THEN $3::uuid ELSE ($4::uuid[])[1 + i % 3] END,
       md5('s' || i) || left(md5('t' || i), 8), 'host' || i || '.example.test', 'EC_prime256v1',
       'placeholder', 'placeholder', nb, nb + interval '90 days',
       CASE WHEN i % 2 = 0 THEN '\\x00'::bytea END, nb,
       CASE WHEN i % 100 = 1 THEN least(nb + interval '1 day', now()) END,
       CASE WHEN i % 100 = 1 THEN 'KEY_COMPROMISE' END,
       i % 2 = 0, CASE WHEN i % 2 = 0 THEN 30 END, CASE WHEN i % 2 = 0 THEN nb + interval '60 days' END,
       CASE WHEN i % 2 = 0 AND nb + interval '60 days' <= now()
                 AND NOT (nb + interval '90 days' > now() AND i % 28 = 0)
            THEN md5('c' || (i + 1))::uuid END
  FROM generate_series(1, $6::int) AS i,
       LATERAL (SELECT now() - make_interval(days => i % 365, secs => i % 86400) AS nb) AS issued
 ORDER BY 1
"""


@contextlib.asynccontextmanager
async def bulk_load(conn: asyncpg.Connection, tables: Sequence[str]) -> AsyncIterator[None]:
    """Around a bulk load of ``tables``: their secondary indexes are dropped and built again after it, each
    from its own definition as the migrations made it (one sort instead of a million random inserts), and
    triggers are off (as ``pg_restore --disable-triggers`` does), so the list counts are made again after
    it (``recount_lists()``, migration 0021). The caller ANALYZEs."""
    secondary = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public'"
        " AND i.tablename = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", list(tables))
    await conn.execute("SET session_replication_role = replica")
    await conn.execute("SET maintenance_work_mem = '256MB'")
    try:
        for index in secondary:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        yield
        for index in secondary:
            await conn.execute(index["indexdef"])
        await conn.execute("SELECT recount_lists()")
    finally:
        await conn.execute("RESET session_replication_role")
        await conn.execute("RESET maintenance_work_mem")


async def populate(conn: asyncpg.Connection, n: int) -> Population:
    """Store ``n`` certificates (see the module docstring), then ANALYZE."""
    project, profile, cas = await create_fixtures(conn)
    if n:
        async with bulk_load(conn, ["certificates"]):
            await conn.execute(_LOAD, project, profile, cas[0], cas[1:], BIG_CA_SHARE, n)
    await conn.execute("ANALYZE")
    return await _population(conn, n)


async def _population(conn: asyncpg.Connection, n: int) -> Population:
    cas = [r["id"] for r in await conn.fetch("SELECT id FROM certificate_authorities ORDER BY name")]
    serials = [r["serial_number"] for r in await conn.fetch(
        "SELECT serial_number FROM certificates WHERE ca_id = $1 ORDER BY id LIMIT 200", cas[0])]
    listed = await conn.fetchval("SELECT count(*) FROM certificates WHERE ca_id = $1 AND revoked_at IS NOT NULL"
                                 " AND not_after > now()", cas[0])
    due = await conn.fetchval(
        "SELECT count(*) FROM certificates WHERE auto_renew AND renewed_by_id IS NULL AND renewal_request_id IS NULL"
        " AND revoked_at IS NULL AND renewal_due_at <= now() AND not_after > now()")
    # An empty table still answers a lookup (of a serial it does not hold).
    return Population(n, cas[0], cas[1:], serials or ["1"], listed, due)


async def take_due(conn: asyncpg.Connection) -> Population:
    """What the renewal scan leaves behind: every due certificate has its renewal request (registered by
    the scan's own statement), and a vacuum has cleared the index entries that pointed at them."""
    due = await requests_db.due_renewals(conn, 1_000_000)
    await requests_db.insert_renewals(conn, [requests_db.NewRenewal(c.id, c.project_id, c.profile_id, None, False)
                                             for c in due], "renewer")
    await conn.execute("VACUUM ANALYZE certificates")
    return await _population(conn, await conn.fetchval("SELECT count(*) FROM certificates"))


# -- plans of the statements the code sends ------------------------------------------------------

@dataclass
class Explaining:
    """An ``Executor`` that has PostgreSQL explain (and run) each statement before running it for real."""

    conn: asyncpg.Connection
    plans: list[dict[str, Any]] = field(default_factory=list)

    async def _explain(self, query: str, args: tuple[Any, ...]) -> None:
        raw = await self.conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args)
        # Text on a bare connection, already decoded on one with the service's codecs (shared.db.pool).
        self.plans.append((json.loads(raw) if isinstance(raw, str) else raw)[0])

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        await self._explain(query, args)
        result: str = await self.conn.execute(query, *args, timeout=timeout)
        return result

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        await self._explain(query, args)
        return await self.conn.fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        await self._explain(query, args)
        return await self.conn.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        await self._explain(query, args)
        return await self.conn.fetchval(query, *args, column=column, timeout=timeout)

    async def prepare(self, query: str, *, name: str | None = None) -> ExplainedStatement:
        """What ``shared.db.fetch_planned`` runs a statement on (explained with its arguments too: the plan
        is the one made for them, as fetch_planned's is)."""
        return ExplainedStatement(self, query)


@dataclass(frozen=True)
class ExplainedStatement:
    explaining: Explaining
    query: str

    async def fetch(self, *args: Any) -> list[Any]:
        return await self.explaining.fetch(self.query, *args)


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN plan, depth first."""
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


@dataclass(frozen=True)
class Shape:
    """What one statement's plan did on the certificates table."""

    indexes: set[str]
    seq_scans: int
    rows_read: int  # rows the certificates scans produced plus those their filters removed
    blocks: int  # shared buffers hit or read by the whole statement

    @staticmethod
    def of(explained: dict[str, Any]) -> Shape:
        plan = explained["Plan"]
        on_certificates = [n for n in nodes(plan) if n.get("Relation Name") == "certificates"]
        rows = sum((n["Actual Rows"] + n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0))
                   * n["Actual Loops"] for n in on_certificates)
        return Shape(indexes={n["Index Name"] for n in on_certificates if "Index Name" in n},
                     seq_scans=sum(n["Node Type"] == "Seq Scan" for n in on_certificates),
                     rows_read=rows, blocks=plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))


# -- the probes: the lifecycle's reads of certificates, called as the service calls them --------------

Run = Callable[[Executor, Population], Awaitable[Any]]


async def _serial_lookup(conn: Executor, pop: Population) -> Any:
    # api.ocsp: the revocation status of the serial an OCSP request names.
    return await ocsp_db.serial_status(conn, pop.big_ca, pop.serials[0])


async def _unknown_serial_lookup(conn: Executor, pop: Population) -> Any:
    # api.ocsp: a serial the CA never issued (answered "unknown").
    return await ocsp_db.serial_status(conn, pop.big_ca, "0" + pop.serials[0])


async def _renewal_scan(conn: Executor, pop: Population) -> Any:
    # worker.renewal.schedule_renewals: one batch of the scan (FOR UPDATE: inside its transaction).
    return await requests_db.due_renewals(conn, BATCH)


async def _crl_entries(conn: Executor, pop: Population) -> Any:
    # worker.revocation.sign_crl: the entries of the CA's next CRL (its previous CRL signed just now).
    return await revocation_db.revoked_serials(conn, pop.big_ca, datetime.now(UTC))


async def _newest_revocation(conn: Executor, pop: Population) -> Any:
    # worker.revocation.sign_crl: whether the newest CRL already covers every revocation.
    return await revocation_db.latest_revocation(conn, pop.big_ca)


@dataclass(frozen=True)
class Probe:
    name: str
    index: str
    run: Run
    # The rows it may read, whatever the number of certificates stored: what it returns, and no more.
    bound: Callable[[Population], int]


PROBES = [
    Probe("revocation lookup of a serial", "certificates_issuer_serial_idx", _serial_lookup, lambda p: 1),
    Probe("revocation lookup, serial never issued", "certificates_issuer_serial_idx", _unknown_serial_lookup,
          lambda p: 0),
    Probe("renewal scan (one batch)", "certificates_renewal_due_idx", _renewal_scan,
          lambda p: min(BATCH, p.due)),
    Probe("CRL entries of the busiest CA", "certificates_revoked_by_issuer_idx", _crl_entries,
          lambda p: p.revoked_unexpired),
    Probe("newest revocation of the busiest CA", "certificates_latest_revocation_idx", _newest_revocation,
          lambda p: 1),
]


async def explain(conn: asyncpg.Connection, probe: Probe, pop: Population) -> list[Shape]:
    """The shape of each statement the probe sends (in a transaction rolled back: the scan locks rows)."""
    explaining = Explaining(conn)
    tx = conn.transaction()
    await tx.start()
    try:
        await probe.run(explaining, pop)
    finally:
        await tx.rollback()
    return [Shape.of(p) for p in explaining.plans]


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    max_ms: float


async def time_probe(conn: asyncpg.Connection, probe: Probe, pop: Population, runs: int = 200) -> Latency:
    """Latency of the probe as the service runs it (prepared statements, one round trip each), warm."""
    samples = []
    for i in range(runs + 10):
        tx = conn.transaction()
        await tx.start()
        try:
            start = time.perf_counter()
            # Another serial each time: a lookup is rarely of the one just looked up.
            await probe.run(conn, replace(pop, serials=[pop.serials[i % len(pop.serials)]]))
            elapsed = time.perf_counter() - start
        finally:
            await tx.rollback()
        if i >= 10:  # the first runs prepare the statements and warm the cache
            samples.append(elapsed * 1000)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return Latency(round(q[49], 3), round(q[94], 3), round(max(samples), 3))
