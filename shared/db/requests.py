"""Certificate requests and certificates: every SQL statement of the issuance path."""

from __future__ import annotations

import functools
import hashlib
import json
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Executor, fetch_planned


@dataclass(frozen=True)
class RequestRow:
    id: UUID
    project_id: UUID
    profile_id: UUID
    status: str
    csr_pem: str | None
    attributes: dict[str, Any] | None
    server_key: bool
    remove_roots: bool
    idempotency_key: str | None
    request_hash: bytes | None
    renewal_of: UUID | None
    claim_token: UUID | None
    attempts: int
    last_error: str | None
    error_message: str | None
    certificate_id: UUID | None
    created_at: datetime
    updated_at: datetime
    batch_id: UUID | None
    batch_index: int | None
    # 'internal' (signed by a worker, kms.signing) or 'external' (obtained from an external CA by
    # worker.external on kms.external): set by the registration authority from the profile's CA (0018).
    issuer_kind: str = "internal"


@dataclass(frozen=True)
class CertificateRow:
    id: UUID
    project_id: UUID
    profile_id: UUID
    request_id: UUID
    ca_id: UUID | None
    serial_number: str
    common_name: str | None
    key_algorithm: str
    certificate_pem: str
    chain_pem: str
    issuing_ca_pem: str | None
    not_before: datetime
    not_after: datetime
    encrypted_private_key: bytes | None
    renewed_from_id: UUID | None
    renewed_by_id: UUID | None
    created_at: datetime
    # Server-driven renewal (DESIGN.md 7): the profile's apiConfig as stamped at issuance (see
    # shared.renewal.stamp), changed per certificate by PATCH /{id}/config.
    auto_renew: bool = False
    renew_before_days: int | None = None
    renewal_due_at: datetime | None = None
    renewal_error: str | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None  # one of shared.pki.crl.REASONS


_REQ_COLS = ", ".join(RequestRow.__dataclass_fields__)
# A certificate's chain is stored once (certificate_chains, migration 0020) and read through this join;
# rows stored before it keep their chain inline.
CHAIN_JOIN = " LEFT JOIN certificate_chains ch ON ch.digest = c.chain_digest"
_SHARED = {"chain_pem": "coalesce(c.chain_pem, ch.chain)",
           "issuing_ca_pem": "coalesce(c.issuing_ca_pem, ch.issuing_ca)"}


def cert_columns(prefix: str = "") -> str:
    """The CertificateRow columns of ``certificates c`` joined with CHAIN_JOIN, each named ``prefix + field``."""
    return ", ".join(f"{_SHARED.get(f, 'c.' + f)} AS {prefix}{f}" for f in CertificateRow.__dataclass_fields__)


_CERT_COLS = cert_columns()


def _request(row: Any) -> RequestRow:
    return RequestRow(**{k: row[k] for k in RequestRow.__dataclass_fields__})


def _certificate(row: Any) -> CertificateRow:
    return CertificateRow(**{k: row[k] for k in CertificateRow.__dataclass_fields__})


@dataclass(frozen=True)
class RequestWithCertificate:
    request: RequestRow
    certificate: CertificateRow | None


async def insert_request(
    conn: Executor, *, project_id: UUID, profile_id: UUID, csr_pem: str | None,
    attributes: dict[str, Any] | None, server_key: bool, remove_roots: bool, requested_by: UUID | None,
    idempotency_key: str | None = None, request_hash: bytes | None = None, renewal_of: UUID | None = None,
    issuer_kind: str = "internal",
) -> RequestRow | None:
    """The new pending request; None when the idempotency key is already used in the project."""
    row = await conn.fetchrow(
        f"INSERT INTO certificate_requests (project_id, profile_id, csr_pem, attributes, server_key, remove_roots,"
        f" requested_by, idempotency_key, request_hash, renewal_of, issuer_kind)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        f" ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        f" RETURNING {_REQ_COLS}",
        project_id, profile_id, csr_pem, attributes, server_key, remove_roots, requested_by, idempotency_key,
        request_hash, renewal_of, issuer_kind)
    return None if row is None else _request(row)


async def request_by_idempotency_key(conn: Executor, project_id: UUID, key: str) -> RequestRow | None:
    row = await conn.fetchrow(
        f"SELECT {_REQ_COLS} FROM certificate_requests WHERE project_id = $1 AND idempotency_key = $2",
        project_id, key)
    return None if row is None else _request(row)


async def get_request(conn: Executor, request_id: UUID, project_id: UUID | None = None) -> RequestRow | None:
    row = await conn.fetchrow(
        f"SELECT {_REQ_COLS} FROM certificate_requests WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
        request_id, project_id)
    return None if row is None else _request(row)


async def request_with_certificate(conn: Executor, request_id: UUID, project_id: UUID) -> RequestWithCertificate | None:
    """One round trip for the poll path: the request and, once issued, its certificate."""
    req_cols = ", ".join(f"r.{c} AS r_{c}" for c in RequestRow.__dataclass_fields__)
    row = await conn.fetchrow(
        f"SELECT {req_cols}, {cert_columns('c_')} FROM certificate_requests r"
        f" LEFT JOIN certificates c ON c.request_id = r.id{CHAIN_JOIN} WHERE r.id = $1 AND r.project_id = $2",
        request_id, project_id)
    if row is None:
        return None
    request = RequestRow(**{k: row[f"r_{k}"] for k in RequestRow.__dataclass_fields__})
    cert = None if row["c_id"] is None else CertificateRow(
        **{k: row[f"c_{k}"] for k in CertificateRow.__dataclass_fields__})
    return RequestWithCertificate(request, cert)


async def claim(conn: Executor, request_id: UUID, token: UUID, lease_seconds: float) -> RequestRow | None:
    """pending -> processing, or take back a processing request whose lease expired. Exactly one caller
    wins: the guarded UPDATE is atomic, and the winner's ``token`` is the only one that can finish it."""
    claimed = await claim_many(conn, [request_id], token, lease_seconds)
    return claimed[0] if claimed else None


async def finish_failed(conn: Executor, request_id: UUID, token: UUID | None, message: str) -> bool:
    """Ends a request failed; with ``token`` None (the reconciler giving up) any open request qualifies.
    A failed server-driven renewal records its reason on the certificate it renews (see _RENEWAL_FAILED)."""
    done = await conn.fetchval(
        "WITH fin AS (UPDATE certificate_requests SET status = 'failed', error_message = $3, lease_expires_at = NULL,"
        " updated_at = now() WHERE id = $1 AND status IN ('pending', 'processing')"
        " AND ($2::uuid IS NULL OR claim_token = $2) RETURNING id, renewal_of, requested_by),"
        + _RENEWAL_FAILED.format(message="$3") + " SELECT id FROM fin", request_id, token, message)
    return done is not None


async def release(conn: Executor, request_ids: list[UUID], token: UUID, error: str) -> None:
    """A transient failure: the requests this claim holds go back to pending (the retry or the reconciler
    takes them again)."""
    await conn.execute(
        "UPDATE certificate_requests SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,"
        " last_error = $3, updated_at = now()"
        " WHERE id = ANY($1::uuid[]) AND status = 'processing' AND claim_token = $2",
        request_ids, token, error)


async def get_certificate(conn: Executor, certificate_id: UUID, project_id: UUID) -> CertificateRow | None:
    """A certificate of the project, unless it was deleted."""
    row = await conn.fetchrow(
        f"SELECT {_CERT_COLS} FROM certificates c{CHAIN_JOIN}"
        " WHERE c.id = $1 AND c.project_id = $2 AND c.deleted_at IS NULL",
        certificate_id, project_id)
    return None if row is None else _certificate(row)


async def delete_certificate(conn: Executor, certificate_id: UUID, project_id: UUID, actor: str) -> bool:
    """Hide a certificate from the certificate routes (the row stays: see migration 0010), audited in the
    same statement; False when there is no such (undeleted) certificate."""
    return bool(await conn.fetchval(
        "WITH gone AS (UPDATE certificates SET deleted_at = now() WHERE id = $1 AND project_id = $2"
        " AND deleted_at IS NULL RETURNING id, project_id),"
        " audited AS (INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " SELECT project_id, $3, 'certificate.delete', 'certificate', id::text, '{}'::jsonb FROM gone RETURNING 1)"
        " SELECT count(*) FROM gone", certificate_id, project_id, actor))


@dataclass(frozen=True)
class StaleRequest:
    id: UUID
    attempts: int
    last_error: str | None


async def stale_open_requests(conn: Executor, older_than_seconds: float, limit: int) -> list[StaleRequest]:
    """Requests pending with no progress for a while, or processing past their lease (internal ones: the
    external path has its own, ``shared.db.external.stale_external``)."""
    rows = await conn.fetch(
        "SELECT id, attempts, last_error FROM certificate_requests"
        " WHERE status IN ('pending', 'processing') AND updated_at < now() - make_interval(secs => $1)"
        " AND issuer_kind = 'internal'"
        " AND (status = 'pending' OR lease_expires_at < now())"
        " ORDER BY updated_at LIMIT $2", older_than_seconds, limit)
    return [StaleRequest(r["id"], r["attempts"], r["last_error"]) for r in rows]


async def touch_requests(conn: Executor, ids: list[UUID]) -> None:
    await conn.execute("UPDATE certificate_requests SET updated_at = now() WHERE id = ANY($1::uuid[])", ids)


# The columns a signature writes, with their PostgreSQL types from CertificateRow's annotations. The chain
# goes to certificate_chains (_store_chains); the row keeps only its digest.
_PG_TYPES = {UUID: "uuid", str: "text", datetime: "timestamptz", bytes: "bytea", bool: "boolean", int: "integer"}
_STORE_TYPES = {field: _PG_TYPES[next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))]
                for field, hint in typing.get_type_hints(CertificateRow).items()
                if field not in ("chain_pem", "issuing_ca_pem")} | {"chain_digest": "bytea"}
_STORE_FIELDS = list(_STORE_TYPES)
# Everything the signatures of one round change, in ONE statement (one round trip, atomic on its own),
# for every certificate of the round at once (one array per column; a statement per certificate cost the
# database some three times as much): each request becomes issued (only for the holder of the claim
# token $1), the serial is reserved for its issuer, the certificate is stored (unique per request), a
# renewed certificate is linked to its successor, the signature is audited (DESIGN.md 4.5), the profile
# lists' counts (migration 0021) grow, and long-polling clients are notified on commit. A certificate
# whose request this claim no longer holds is not written at all.
_STORE_SQL = f"""
    WITH input AS (
        SELECT * FROM unnest($2::uuid[], $3::text[], {", ".join(
            f"${i}::{_STORE_TYPES[f]}[]" for i, f in enumerate(_STORE_FIELDS, 4))})
            AS t(serial_issuer, details, {", ".join(_STORE_FIELDS)})),
    fin AS (
        UPDATE certificate_requests r SET status = 'issued', certificate_id = input.id, lease_expires_at = NULL,
               last_error = NULL, updated_at = now()
          FROM input
         WHERE r.id = input.request_id AND r.status = 'processing' AND r.claim_token = $1
        RETURNING r.id),
    stored AS MATERIALIZED (SELECT input.* FROM input JOIN fin ON fin.id = input.request_id),
    serial AS (
        INSERT INTO issued_serials (issuer_id, serial_number) SELECT serial_issuer, serial_number FROM stored
        RETURNING 1),
    cert AS (
        INSERT INTO certificates ({", ".join(_STORE_FIELDS)}) SELECT {", ".join(_STORE_FIELDS)} FROM stored
        RETURNING id, renewed_from_id),
    renewal AS (
        UPDATE certificates SET renewed_by_id = cert.id FROM cert WHERE certificates.id = cert.renewed_from_id
        RETURNING 1),
    audited AS (
        INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)
        SELECT project_id, 'worker', 'certificate.sign', 'certificate', id::text, details::jsonb FROM stored
        RETURNING 1),
    counted AS (
        INSERT INTO profile_certificate_counts AS c (profile_id, slot, n)
        SELECT profile_id, pg_backend_pid() % 64, count(*) FROM stored GROUP BY profile_id
        ON CONFLICT (profile_id, slot) DO UPDATE SET n = c.n + EXCLUDED.n RETURNING 1)
    SELECT count(*) FROM (SELECT pg_notify('kms_events', 'req:' || fin.id::text) FROM fin) notified
"""


def chain_digest(cert: CertificateRow) -> bytes:
    return hashlib.sha256(f"{cert.chain_pem}\0{cert.issuing_ca_pem or ''}".encode()).digest()


def _store_columns(items: list[tuple[CertificateRow, UUID, dict[str, Any]]], token: UUID) -> list[Any]:
    certs = [c for c, _, _ in items]
    return [token, [issuer for _, issuer, _ in items], [json.dumps(d) for _, _, d in items],
            *([chain_digest(c) for c in certs] if field == "chain_digest" else [getattr(c, field) for c in certs]
              for field in _STORE_FIELDS)]


# Chains this process has seen committed (a chain row is never deleted): a signing round from a known CA
# then skips its INSERT, one round trip of the nine a round makes. Bounded; forgetting only costs an INSERT.
_COMMITTED_CHAINS: set[bytes] = set()
_COMMITTED_CHAINS_MAX = 4096


def chains_committed(certs: list[CertificateRow]) -> None:
    """After the commit of a transaction that stored ``certs``: their chains are in the database for good."""
    if len(_COMMITTED_CHAINS) > _COMMITTED_CHAINS_MAX:
        _COMMITTED_CHAINS.clear()
    _COMMITTED_CHAINS.update(chain_digest(c) for c in certs)


async def _store_chains(conn: Executor, certs: list[CertificateRow]) -> None:
    """Each distinct chain of ``certs`` once (a chunk from one CA has one or two: with and without root)."""
    chains = {d: c for c in certs if (d := chain_digest(c)) not in _COMMITTED_CHAINS}
    if not chains:
        return
    await conn.execute(
        "INSERT INTO certificate_chains (digest, chain, issuing_ca)"
        " SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[]) ON CONFLICT (digest) DO NOTHING",
        list(chains), [c.chain_pem for c in chains.values()], [c.issuing_ca_pem for c in chains.values()])


async def store_issued(conn: Executor, cert: CertificateRow, *, token: UUID, serial_issuer: UUID,
                       audit_details: dict[str, Any]) -> bool:
    """Store one signature (see _STORE_SQL); False when the claim was lost (nothing is written)."""
    return await store_many(conn, [(cert, serial_issuer, audit_details)], token=token) == 1


async def store_many(conn: Executor, items: list[tuple[CertificateRow, UUID, dict[str, Any]]], *,
                     token: UUID) -> int:
    """Store many signatures in the caller's transaction, in one statement, and return how many were
    stored (a request whose claim was lost stores none). Planned on every call (fetch_planned): a cached
    generic plan knows neither how many rows the arrays hold nor how large the tables have grown since the
    connection first ran it (a plan made while a table was small reads it whole; the soak saw that)."""
    if not items:
        return 0
    await _store_chains(conn, [c for c, _, _ in items])
    return int((await fetch_planned(conn, _STORE_SQL, *_store_columns(items, token)))[0][0])


# A server-driven renewal that fails (the policy was tightened since the certificate was issued, say)
# records why on the certificate it renews, in the statement that fails the request: the renewal scan
# skips a certificate with a renewal_error, so it is not retried. Only the renewal under way counts (the
# one renewal_request_id names). The scan's own requests have no requested_by; a renewal asked by hand
# answers its caller instead, and only gives the certificate back to the scan.
_RENEWAL_FAILED = """
    renewal_failed AS (
        UPDATE certificates SET renewal_error = {message} FROM fin
         WHERE certificates.id = fin.renewal_of AND certificates.renewal_request_id = fin.id
           AND fin.requested_by IS NULL
        RETURNING certificates.id, certificates.project_id),
    renewal_by_hand_failed AS (
        UPDATE certificates SET renewal_request_id = NULL FROM fin
         WHERE certificates.id = fin.renewal_of AND certificates.renewal_request_id = fin.id
           AND fin.requested_by IS NOT NULL
        RETURNING 1),
    renewal_failure_audited AS (
        INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)
        SELECT project_id, 'worker', 'certificate.renewal.failed', 'certificate', id::text,
               jsonb_build_object('error', {message}::text) FROM renewal_failed RETURNING 1)"""

_FAIL_SQL = """
    WITH fin AS (
        UPDATE certificate_requests SET status = 'failed', error_message = $3, lease_expires_at = NULL,
               updated_at = now()
         WHERE id = $1 AND status = 'processing' AND claim_token = $2 RETURNING id, renewal_of, requested_by),""" + \
    _RENEWAL_FAILED.format(message="$3") + """,
    audited AS (
        INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)
        SELECT $4, 'worker', 'certificate.sign.refused', 'certificate_request', fin.id::text,
               jsonb_build_object('error', $3::text) FROM fin RETURNING 1)
    SELECT count(*) FROM (SELECT pg_notify('kms_events', 'req:' || fin.id::text) FROM fin) notified
"""


async def fail_many(conn: asyncpg.Connection, items: list[tuple[UUID, UUID, str]], *, token: UUID) -> None:
    """End many claimed requests failed (request id, project id, message), audited and notified."""
    if items:
        await conn.executemany(_FAIL_SQL, [(rid, token, message, pid) for rid, pid, message in items])


async def claim_many(conn: Executor, request_ids: list[UUID], token: UUID, lease_seconds: float) -> list[RequestRow]:
    """``claim`` for a list: every open request of the list that no live lease holds, in one statement.
    Never an external CA's request (issuer_kind 'external'): only worker.external works on those, so an
    upstream order is never placed, nor a certificate signed, by this path."""
    rows = await conn.fetch(
        f"UPDATE certificate_requests SET status = 'processing', claim_token = $2, attempts = attempts + 1,"
        f" lease_expires_at = now() + make_interval(secs => $3), updated_at = now()"
        f" WHERE id = ANY($1::uuid[]) AND (status = 'pending' OR (status = 'processing' AND lease_expires_at < now()))"
        f" AND issuer_kind = 'internal'"
        f" RETURNING {_REQ_COLS}",
        request_ids, token, lease_seconds)
    return [_request(r) for r in rows]


async def claim_ready(conn: Executor, token: UUID, lease_seconds: float, limit: int) -> list[RequestRow]:
    """Claim up to ``limit`` of the oldest pending single requests (not batch items, nor an external CA's:
    worker.external alone works on those), skipping any another worker is claiming at this moment: the
    doorbell's worker takes every request that is ready, so a chunk grows with the load instead of one
    message per request (index certificate_requests_ready_idx)."""
    if limit <= 0:
        return []
    # MATERIALIZED: the LIMIT applies once. As a plain subquery the planner may rescan it, and each scan
    # under SKIP LOCKED finds other rows (a claim of 80 with a limit of 32 was seen).
    cols = ", ".join(f"r.{c}" for c in RequestRow.__dataclass_fields__)
    rows = await conn.fetch(
        "WITH ready AS MATERIALIZED (SELECT id FROM certificate_requests WHERE status = 'pending'"
        "                            AND batch_id IS NULL AND issuer_kind = 'internal'"
        "                            ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " UPDATE certificate_requests r SET status = 'processing', claim_token = $1, attempts = r.attempts + 1,"
        " lease_expires_at = now() + make_interval(secs => $2), updated_at = now()"
        f" FROM ready WHERE r.id = ready.id RETURNING {cols}",
        token, lease_seconds, limit)
    return [_request(r) for r in rows]


async def extend_leases(conn: Executor, request_ids: list[UUID], token: UUID, lease_seconds: float) -> set[UUID]:
    """The heartbeat of a long chunk: push the lease of every request this claim still holds; returns
    those ids (a request missing from the answer was taken back, and must not be worked on)."""
    rows = await conn.fetch(
        "UPDATE certificate_requests SET lease_expires_at = now() + make_interval(secs => $3)"
        " WHERE id = ANY($1::uuid[]) AND status = 'processing' AND claim_token = $2 RETURNING id",
        request_ids, token, lease_seconds)
    return {r["id"] for r in rows}


async def lock_claimed(conn: Executor, request_ids: list[UUID], token: UUID) -> set[UUID]:
    """Inside the signing transaction: lock the requests this claim still holds. Until the commit no
    other worker can claim them, expired lease or not, so what is signed after this is what is stored."""
    # The status is checked here, not in the WHERE: "status = 'processing'" lets PostgreSQL read the small
    # partial index certificate_requests_open_idx with a bitmap scan instead of the primary key, and a
    # bitmap scan never marks the dead entries each request leaves there (pending, then processing), so
    # the statement slowed down with every request until a vacuum: 1.7 ms a round on average after a
    # minute at 287/s (auto_explain), the soak's p50 climbing between vacuums. A token is only ever this
    # claim's, so no other worker's row is locked.
    rows = await conn.fetch(
        "SELECT id, status FROM certificate_requests WHERE id = ANY($1::uuid[]) AND claim_token = $2"
        " ORDER BY id FOR UPDATE", request_ids, token)
    return {r["id"] for r in rows if r["status"] == "processing"}


@dataclass(frozen=True)
class RequestFilter:
    """The filters of the request list (``GET /certificate-requests`` and ``POST .../search``)."""

    project_id: UUID
    statuses: list[str] | None = None  # database statuses
    search: str | None = None  # a substring of the common name, or the whole id
    from_date: datetime | None = None
    to_date: datetime | None = None
    profile_ids: list[UUID] | None = None
    sort_by: str = "created_at"  # created_at | updated_at
    descending: bool = True

    @property
    def whole_project(self) -> bool:
        """No filter but the project: its total is the running count of migration 0021."""
        return (self.statuses is None and self.from_date is None and self.to_date is None
                and self.profile_ids is None and not self.search)


@dataclass(frozen=True)
class ListedRequest:
    request: RequestRow
    profile_slug: str | None
    ca_id: UUID | None
    common_name: str | None
    serial_number: str | None
    not_after: datetime | None
    revoked_at: datetime | None = None


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_SORTS = {"created_at": "r.created_at", "updated_at": "r.updated_at"}


def _request_id(text: str) -> UUID | None:
    """The request id ``text`` spells (the canonical 8-4-4-4-12 form, in either case), else None."""
    try:
        parsed = UUID(text)
    except ValueError:
        return None
    return parsed if str(parsed) == text.lower() else None


# What the list joins to each request: its certificate (once issued) and its profile.
_JOINS = (" LEFT JOIN certificates c ON c.id = r.certificate_id"
          " LEFT JOIN certificate_profiles p ON p.id = r.profile_id")


def _source(f: RequestFilter) -> tuple[str, str, list[Any]]:
    """The FROM clause, the WHERE clause and the arguments of the filter ``f``."""
    args: list[Any] = [f.project_id, f.statuses, f.from_date, f.to_date, f.profile_ids]
    where = ("r.project_id = $1 AND ($2::text[] IS NULL OR r.status = ANY($2))"
             " AND ($3::timestamptz IS NULL OR r.created_at >= $3) AND ($4::timestamptz IS NULL OR r.created_at <= $4)"
             " AND ($5::uuid[] IS NULL OR r.profile_id = ANY($5))")
    if not f.search:
        return " FROM certificate_requests r" + _JOINS, where, args
    # A request matches when the common name the list shows for it contains the text (case-insensitive):
    # its certificate's, or (no certificate yet, or one without a common name) the one it asked for; or
    # when its id is the text. That is what coalesce(c.common_name, r.attributes->>'commonName') ILIKE
    # '%text%' OR r.id::text = text said, but asked of each table alone, so that each reads its trigram
    # index (migration 0022) instead of every row of the project: the ids that match, then those requests
    # by primary key. The branches are disjoint (a request's certificate names it, and it names its
    # certificate: both are written by one statement, _STORE_SQL), so each id comes once, a join needs no
    # de-duplication, and the planner's estimate of how many match is that of the index scans. The one
    # change: the id is compared as a uuid, so an id written in capitals matches too.
    args.append("%" + _like_escaped(f.search) + "%")
    pattern = f"${len(args)}"
    with_certificate = " FROM certificate_requests q LEFT JOIN certificates qc ON qc.id = q.certificate_id"
    matched = (f"SELECT request_id AS id FROM certificates WHERE project_id = $1 AND common_name ILIKE {pattern}"
               f" UNION ALL SELECT q.id{with_certificate} WHERE q.project_id = $1"
               f" AND q.attributes->>'commonName' ILIKE {pattern} AND qc.common_name IS NULL")
    request_id = _request_id(f.search)
    if request_id is not None:  # unless its common name already matched
        args.append(request_id)
        matched += (f" UNION ALL SELECT q.id{with_certificate} WHERE q.id = ${len(args)}"
                    f" AND (coalesce(qc.common_name, q.attributes->>'commonName') ILIKE {pattern}) IS NOT TRUE")
    return f" FROM ({matched}) m JOIN certificate_requests r ON r.id = m.id" + _JOINS, where, args


async def search_requests(conn: Executor, f: RequestFilter, *, offset: int, limit: int,
                          after: tuple[datetime, UUID] | None = None) -> tuple[list[ListedRequest], int]:
    """One page of a project's requests with their profile, CA and certificate summary, and the total
    count of the filter. ``after`` (keyset, newest first only) replaces ``offset`` for deep pages."""
    base, where, args = _source(f)
    # A search's statements are planned for its pattern each time (see fetch_planned).
    fetch = functools.partial(fetch_planned, conn) if f.search else conn.fetch
    if f.whole_project:  # the running count, not a count of every row on every page
        total = int(await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM request_counts WHERE project_id = $1", f.project_id))
    else:
        total = int((await fetch(f"SELECT count(*){base} WHERE {where}", *args))[0][0])
    column = _SORTS[f.sort_by]
    order = "DESC" if f.descending else "ASC"
    page_where = where
    page_args = list(args)
    if after is not None:
        page_args += [after[0], after[1]]
        page_where += f" AND (r.created_at, r.id) < (${len(page_args) - 1}, ${len(page_args)}::uuid)"
        offset = 0
    page_args += [limit, offset]
    req_cols = ", ".join(f"r.{c}" for c in RequestRow.__dataclass_fields__)
    rows = await fetch(
        f"SELECT {req_cols}, p.slug AS p_slug, coalesce(c.ca_id, p.ca_id) AS p_ca_id, c.common_name AS c_common_name,"
        f" c.serial_number AS c_serial_number, c.not_after AS c_not_after, c.revoked_at AS c_revoked_at"
        f"{base} WHERE {page_where}"
        f" ORDER BY {column} {order}, r.id {order} LIMIT ${len(page_args) - 1} OFFSET ${len(page_args)}",
        *page_args)
    return [ListedRequest(_request(r), r["p_slug"], r["p_ca_id"],
                          r["c_common_name"] or (r["attributes"] or {}).get("commonName"),
                          r["c_serial_number"], r["c_not_after"], r["c_revoked_at"]) for r in rows], total


async def project_has_slug(conn: Executor, project_id: UUID, slug: str) -> bool:
    """Whether the caller's project is called ``slug``. (Read through to_jsonb so that this works both
    before and after the migration that gives projects a slug: without one, any slug names it.)"""
    return bool(await conn.fetchval(
        "SELECT coalesce(to_jsonb(p)->>'slug', $2) = $2 FROM projects p WHERE id = $1", project_id, slug))


# -- server-driven renewal (DESIGN.md 7) -------------------------------------------------------------

async def due_renewals(conn: Executor, limit: int) -> list[CertificateRow]:
    """Inside the scan's transaction: up to ``limit`` certificates due for server-driven renewal, locked
    (SKIP LOCKED: two scans at once share the work, never renew one twice). Active (neither revoked nor
    expired nor deleted), not renewed or being renewed, with a server-made key and no renewal error;
    read through certificates_renewal_due_idx."""
    rows = await conn.fetch(
        f"SELECT {_CERT_COLS} FROM certificates c{CHAIN_JOIN}"
        " WHERE auto_renew AND renewal_due_at IS NOT NULL AND renewed_by_id IS NULL AND renewal_request_id IS NULL"
        " AND renewal_error IS NULL AND revoked_at IS NULL AND deleted_at IS NULL"
        " AND renewal_due_at <= now() AND not_after > now() AND encrypted_private_key IS NOT NULL"
        " ORDER BY renewal_due_at LIMIT $1 FOR UPDATE OF c SKIP LOCKED", limit)
    return [_certificate(r) for r in rows]


async def lock_renewal_under_way(conn: Executor, certificate_id: UUID) -> RequestRow | None:
    """Inside a renewal's transaction: lock the certificate (the scan skips a locked certificate, a second
    renewal by hand waits here), and return the renewal it has under way, if any: the request its
    ``renewal_request_id`` names (the scan's, or an earlier one by hand), while still pending or processing."""
    request_id = await conn.fetchval("SELECT renewal_request_id FROM certificates WHERE id = $1 FOR UPDATE",
                                     certificate_id)
    if request_id is None:
        return None
    # A statement of its own, so it reads what is committed now: a scan this lock waited for has just
    # committed its request, which the locking statement's snapshot predates.
    row = await conn.fetchrow(
        f"SELECT {_REQ_COLS} FROM certificate_requests WHERE id = $1 AND status IN ('pending', 'processing')",
        request_id)
    return None if row is None else _request(row)


async def mark_renewal(conn: Executor, certificate_id: UUID, request_id: UUID) -> None:
    """The certificate is being renewed by ``request_id``: no scan registers another renewal of it (it
    reads only certificates without one), and a renewal by hand meanwhile answers with this one."""
    await conn.execute("UPDATE certificates SET renewal_request_id = $2 WHERE id = $1", certificate_id, request_id)


async def get_requests(conn: Executor, request_ids: list[UUID]) -> dict[UUID, RequestRow]:
    rows = await conn.fetch(f"SELECT {_REQ_COLS} FROM certificate_requests WHERE id = ANY($1::uuid[])", request_ids)
    return {r["id"]: _request(r) for r in rows}


@dataclass(frozen=True)
class NewRenewal:
    """A renewal request the scan registers: for ``certificate_id``, as validated by the RA."""

    certificate_id: UUID
    project_id: UUID
    profile_id: UUID
    attributes: dict[str, Any] | None
    remove_roots: bool
    issuer_kind: str = "internal"


async def insert_renewals(conn: Executor, renewals: list[NewRenewal], actor: str) -> list[UUID]:
    """Write many pending renewal requests in one statement, mark each certificate as being renewed by
    its request (so no later scan renews it again), and audit ``certificate.renewal.scheduled`` for each.
    Returns the new request ids."""
    if not renewals:
        return []
    rows = await conn.fetch(
        "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[], $7::text[])"
        "   AS t(cert_id, project_id, profile_id, attributes, remove_roots, issuer_kind)),"
        " ins AS (INSERT INTO certificate_requests (project_id, profile_id, attributes, server_key, remove_roots,"
        "   renewal_of, issuer_kind) SELECT project_id, profile_id, attributes::jsonb, true, remove_roots, cert_id,"
        "   issuer_kind FROM input"
        "   RETURNING id, project_id, renewal_of),"
        " marked AS (UPDATE certificates SET renewal_request_id = ins.id FROM ins"
        "   WHERE certificates.id = ins.renewal_of RETURNING 1),"
        " audited AS (INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        "   SELECT project_id, $6, 'certificate.renewal.scheduled', 'certificate', renewal_of::text,"
        "   jsonb_build_object('request', id::text) FROM ins RETURNING 1)"
        " SELECT id FROM ins",
        [r.certificate_id for r in renewals], [r.project_id for r in renewals], [r.profile_id for r in renewals],
        [None if r.attributes is None else json.dumps(r.attributes) for r in renewals],
        [r.remove_roots for r in renewals], actor, [r.issuer_kind for r in renewals])
    return [r["id"] for r in rows]


async def record_renewal_errors(conn: Executor, failures: list[tuple[UUID, str]], actor: str) -> None:
    """Renewals the RA refused (certificate id, why): recorded on each certificate, so the scan stops
    retrying it, and audited as ``certificate.renewal.failed``, in one statement."""
    if not failures:
        return
    await conn.execute(
        "WITH failed AS (UPDATE certificates SET renewal_error = t.error"
        "   FROM unnest($1::uuid[], $2::text[]) AS t(id, error) WHERE certificates.id = t.id"
        "   RETURNING certificates.id, certificates.project_id, t.error)"
        " INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " SELECT project_id, $3, 'certificate.renewal.failed', 'certificate', id::text,"
        " jsonb_build_object('error', error) FROM failed",
        [c for c, _ in failures], [m for _, m in failures], actor)


async def set_renewal_config(conn: Executor, certificate_id: UUID, project_id: UUID, *, auto_renew: bool,
                             renew_before_days: int | None, actor: str) -> bool:
    """PATCH /{id}/config: the certificate's own renewal setting (its due date follows). Turning renewal
    on again clears a recorded renewal error, so the scan tries once more. Audited in the statement."""
    return bool(await conn.fetchval(
        "WITH changed AS (UPDATE certificates SET auto_renew = $3, renew_before_days = $4,"
        "   renewal_due_at = CASE WHEN $3 THEN not_after - make_interval(days => $4) END,"
        "   renewal_request_id = CASE WHEN $3 AND renewal_error IS NOT NULL THEN NULL ELSE renewal_request_id END,"
        "   renewal_error = CASE WHEN $3 THEN NULL ELSE renewal_error END"
        "   WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL RETURNING id, project_id),"
        " audited AS (INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        "   SELECT project_id, $5, 'certificate.config.update', 'certificate', id::text,"
        "   jsonb_build_object('autoRenew', $3::boolean, 'renewBeforeDays', $4::integer) FROM changed RETURNING 1)"
        " SELECT count(*) FROM changed", certificate_id, project_id, auto_renew, renew_before_days, actor))
