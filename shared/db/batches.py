"""Bulk batches: one row per batch, its items are certificate requests written with COPY."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Executor
from shared.db.requests import CHAIN_JOIN, CertificateRow, RequestRow, cert_columns


@dataclass(frozen=True)
class BatchRow:
    id: UUID
    project_id: UUID
    profile_id: UUID
    total: int
    created_at: datetime
    failed_at_submission: int
    request_hash: bytes | None


@dataclass(frozen=True)
class NewItem:
    """One item as evaluated by the API: valid ones are pending, invalid ones failed with the reasons."""

    index: int
    profile_id: UUID
    csr_pem: str | None
    attributes: dict[str, Any] | None
    error_message: str | None


@dataclass(frozen=True)
class Counts:
    total: int
    pending: int
    issued: int
    failed: int
    last_update: datetime | None


_BATCH_COLS = "id, project_id, profile_id, total, created_at, failed_at_submission, request_hash"
_ITEM_COLUMNS = ("id", "project_id", "profile_id", "status", "csr_pem", "attributes", "server_key",
                 "requested_by", "error_message", "batch_id", "batch_index")


async def insert_batch(conn: asyncpg.Connection, *, project_id: UUID, profile_id: UUID, requested_by: UUID,
                       items: list[NewItem], idempotency_key: str | None = None, request_hash: bytes | None = None
                       ) -> tuple[BatchRow, list[tuple[int, UUID]]] | None:
    """The batch and all its items in the caller's transaction: one INSERT and one COPY (not a statement
    per item). Returns the batch and (index, request id) of the items left pending; None (nothing
    written) when the project already has a batch with this idempotency key."""
    failed = sum(1 for item in items if item.error_message)
    row = await conn.fetchrow(
        f"INSERT INTO certificate_batches (project_id, profile_id, total, requested_by, idempotency_key,"
        f" request_hash, failed_at_submission) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        f" ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        f" RETURNING {_BATCH_COLS}", project_id, profile_id, len(items), requested_by, idempotency_key,
        request_hash, failed)
    if row is None:
        return None
    batch = BatchRow(**dict(row))
    records = []
    pending = []
    for item in items:
        request_id = uuid.uuid4()
        status = "failed" if item.error_message else "pending"
        if status == "pending":
            pending.append((item.index, request_id))
        records.append((request_id, project_id, item.profile_id, status, item.csr_pem,
                        item.attributes,
                        item.csr_pem is None, requested_by, item.error_message, batch.id, item.index))
    await conn.copy_records_to_table("certificate_requests", records=records, columns=_ITEM_COLUMNS)
    return batch, pending


async def batch_by_idempotency_key(conn: Executor, project_id: UUID, key: str) -> BatchRow | None:
    row = await conn.fetchrow(
        f"SELECT {_BATCH_COLS} FROM certificate_batches WHERE project_id = $1 AND idempotency_key = $2",
        project_id, key)
    return None if row is None else BatchRow(**dict(row))


async def get_batch(conn: Executor, batch_id: UUID, project_id: UUID) -> BatchRow | None:
    row = await conn.fetchrow(f"SELECT {_BATCH_COLS} FROM certificate_batches WHERE id = $1 AND project_id = $2",
                              batch_id, project_id)
    return None if row is None else BatchRow(**dict(row))


async def counts(conn: Executor, batch_id: UUID) -> Counts:
    row = await conn.fetchrow(
        "SELECT count(*) AS total,"
        " count(*) FILTER (WHERE status IN ('pending', 'processing')) AS pending,"
        " count(*) FILTER (WHERE status = 'issued') AS issued,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " max(updated_at) AS last_update"
        " FROM certificate_requests WHERE batch_id = $1", batch_id)
    return Counts(row["total"], row["pending"], row["issued"], row["failed"], row["last_update"])


@dataclass(frozen=True)
class Item:
    request: RequestRow
    certificate: CertificateRow | None


async def items(conn: Executor, batch_id: UUID, *, status: str | None, after_index: int, limit: int) -> list[Item]:
    """Items in index order after ``after_index``, with their certificates (one query)."""
    req_fields = list(RequestRow.__dataclass_fields__)
    cert_fields = list(CertificateRow.__dataclass_fields__)
    cols = ", ".join([*(f"r.{c} AS r_{c}" for c in req_fields), cert_columns("c_")])
    # "pending" as a filter means not final yet, processing included (as in the counters).
    status_filter = "($3::text IS NULL OR r.status = $3 OR ($3 = 'pending' AND r.status = 'processing'))"
    rows = await conn.fetch(
        f"SELECT {cols} FROM certificate_requests r LEFT JOIN certificates c ON c.request_id = r.id{CHAIN_JOIN}"
        f" WHERE r.batch_id = $1 AND r.batch_index > $2 AND {status_filter}"
        f" ORDER BY r.batch_index LIMIT $4", batch_id, after_index, status, limit)
    out = []
    for row in rows:
        req = RequestRow(**{c: row[f"r_{c}"] for c in req_fields})
        cert = None if row["c_id"] is None else CertificateRow(**{c: row[f"c_{c}"] for c in cert_fields})
        out.append(Item(req, cert))
    return out


async def list_batches(conn: Executor, project_id: UUID, *, limit: int) -> list[BatchRow]:
    """A project's newest batches (the web UI's batches page)."""
    rows = await conn.fetch(f"SELECT {_BATCH_COLS} FROM certificate_batches WHERE project_id = $1"
                            " ORDER BY created_at DESC, id DESC LIMIT $2", project_id, limit)
    return [BatchRow(**dict(r)) for r in rows]
