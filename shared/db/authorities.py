"""Internal certificate authorities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor

NOTIFY_CHANNEL = "kms_events"


@dataclass(frozen=True)
class Authority:
    id: UUID
    project_id: UUID
    name: str
    type: str
    parent_ca_id: UUID | None
    status: str
    subject: dict[str, Any]
    key_algorithm: str
    max_path_length: int | None
    ttl_seconds: int | None
    requested_not_after: datetime | None
    serial_number: str | None
    not_before: datetime | None
    not_after: datetime | None
    certificate_pem: str | None
    chain_pem: str | None
    error_message: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    key_sealed_by: str  # which root key's data key seals the CA key: 'ca-root', or 'root' before migration 0007
    status_after_creation: str  # 'active' or 'disabled': the status the worker leaves a new CA in (0011)


_COLS = ("id, project_id, name, type, parent_ca_id, status, subject, key_algorithm, max_path_length,"
         " ttl_seconds, requested_not_after, serial_number, not_before, not_after, certificate_pem, chain_pem,"
         " error_message, attempts, created_at, updated_at, key_sealed_by, status_after_creation")
# An arbitrary constant: the advisory lock key that serialises CA-key re-sealers ("kmsseal" in ASCII).
RESEAL_LOCK_KEY = 0x6B6D737365616C


def _authority(row: Any) -> Authority:
    return Authority(**{k: row[k] for k in Authority.__dataclass_fields__})


async def insert(
    conn: Executor, *, project_id: UUID, name: str, type: str, parent_ca_id: UUID | None,
    subject: dict[str, Any], key_algorithm: str, max_path_length: int | None, ttl_seconds: int | None,
    requested_not_after: datetime | None, status_after_creation: str = "active",
) -> Authority | None:
    """None when the name is taken in the project."""
    row = await conn.fetchrow(
        f"INSERT INTO certificate_authorities (project_id, name, type, parent_ca_id, subject, key_algorithm,"
        f" max_path_length, ttl_seconds, requested_not_after, status_after_creation)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        f" ON CONFLICT (project_id, name) DO NOTHING RETURNING {_COLS}",
        project_id, name, type, parent_ca_id, subject, key_algorithm, max_path_length, ttl_seconds,
        requested_not_after, status_after_creation,
    )
    return None if row is None else _authority(row)


async def get(conn: Executor, ca_id: UUID, project_id: UUID | None = None) -> Authority | None:
    """The CA; with ``project_id``, only if it belongs to that project (tenancy)."""
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM certificate_authorities WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
        ca_id, project_id)
    return None if row is None else _authority(row)


async def list_for_project(conn: Executor, project_id: UUID) -> list[Authority]:
    """The project's internal CAs (an ACME CA is listed by ``shared.db.external.list_acme_cas``)."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM certificate_authorities WHERE project_id = $1 AND type <> 'acme'"
        f" ORDER BY created_at, id", project_id)
    return [_authority(r) for r in rows]


async def set_status(conn: Executor, ca_id: UUID, project_id: UUID, status: str) -> Authority | None:
    """Switch between active and disabled only (a pending or failed CA keeps its state)."""
    row = await conn.fetchrow(
        f"UPDATE certificate_authorities SET status = $3, updated_at = now()"
        f" WHERE id = $1 AND project_id = $2 AND status IN ('active', 'disabled') RETURNING {_COLS}",
        ca_id, project_id, status)
    return None if row is None else _authority(row)


async def delete(conn: Executor, ca_id: UUID, project_id: UUID) -> Authority | None:
    """Delete a CA nothing refers to any more (the caller checked ``references`` in the same transaction);
    None if it is gone already."""
    row = await conn.fetchrow(
        f"DELETE FROM certificate_authorities WHERE id = $1 AND project_id = $2 RETURNING {_COLS}",
        ca_id, project_id)
    return None if row is None else _authority(row)


async def references(conn: Executor, ca_id: UUID) -> dict[str, int]:
    """What still uses a CA, locking the CA row first so that no profile or child CA appears meanwhile:
    {"child CAs": n, "profiles": n, "certificates": n}, zero counts left out."""
    await conn.execute("SELECT 1 FROM certificate_authorities WHERE id = $1 FOR UPDATE", ca_id)
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM certificate_authorities WHERE parent_ca_id = $1) AS children,"
        " (SELECT count(*) FROM certificate_profiles WHERE ca_id = $1) AS profiles,"
        " (SELECT count(*) FROM certificates WHERE ca_id = $1) AS certificates", ca_id)
    assert row is not None
    counts = {"child CAs": row["children"], "profiles": row["profiles"], "certificates": row["certificates"]}
    return {k: int(v) for k, v in counts.items() if v}


async def lock_pending(conn: Executor, ca_id: UUID) -> Authority | None:
    """Lock a pending CA row for the worker creating it; None if it is no longer pending.

    The row lock makes a duplicate delivery of the same task wait, then find the CA active and stop.
    """
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM certificate_authorities WHERE id = $1 AND status = 'pending' AND type <> 'acme'"
        f" FOR UPDATE", ca_id)
    return None if row is None else _authority(row)


async def activate(
    conn: Executor, ca_id: UUID, *, serial_number: str, not_before: datetime, not_after: datetime,
    certificate_pem: str, chain_pem: str, encrypted_private_key: bytes, key_sealed_by: str,
) -> None:
    await conn.execute(
        "UPDATE certificate_authorities SET status = status_after_creation, serial_number = $2, not_before = $3,"
        " not_after = $4, certificate_pem = $5, chain_pem = $6, encrypted_private_key = $7, key_sealed_by = $8,"
        " error_message = NULL, updated_at = now() WHERE id = $1",
        ca_id, serial_number, not_before, not_after, certificate_pem, chain_pem, encrypted_private_key,
        key_sealed_by)


async def fail(conn: Executor, ca_id: UUID, message: str) -> None:
    await conn.execute(
        "UPDATE certificate_authorities SET status = 'failed', error_message = $2, updated_at = now()"
        " WHERE id = $1 AND status = 'pending'", ca_id, message)


async def count_attempt(conn: Executor, ca_id: UUID) -> int:
    attempts: int | None = await conn.fetchval(
        "UPDATE certificate_authorities SET attempts = attempts + 1 WHERE id = $1 AND status = 'pending'"
        " RETURNING attempts", ca_id)
    return attempts or 0


async def signing_material(conn: Executor, ca_id: UUID) -> tuple[Authority, bytes] | None:
    """An active CA and its encrypted key (worker only: the API never reads CA key columns)."""
    row = await conn.fetchrow(
        f"SELECT {_COLS}, encrypted_private_key FROM certificate_authorities WHERE id = $1", ca_id)
    if row is None or row["encrypted_private_key"] is None:
        return None
    return _authority(row), row["encrypted_private_key"]


async def lock_keys_sealed_by(conn: Executor, sealed_by: str) -> list[tuple[UUID, UUID, bytes]]:
    """(CA id, project id, sealed key) of every CA key sealed under ``sealed_by``'s data key, locked for
    re-sealing (worker only). The caller holds a transaction; the advisory lock makes a second re-sealer
    wait for the first, then find nothing left."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", RESEAL_LOCK_KEY)
    rows = await conn.fetch(
        "SELECT id, project_id, encrypted_private_key FROM certificate_authorities"
        " WHERE key_sealed_by = $1 AND encrypted_private_key IS NOT NULL ORDER BY id FOR UPDATE", sealed_by)
    return [(r["id"], r["project_id"], r["encrypted_private_key"]) for r in rows]


async def reseal_key(conn: Executor, ca_id: UUID, encrypted_private_key: bytes, key_sealed_by: str) -> None:
    await conn.execute(
        "UPDATE certificate_authorities SET encrypted_private_key = $2, key_sealed_by = $3 WHERE id = $1",
        ca_id, encrypted_private_key, key_sealed_by)


async def stale_pending(conn: Executor, older_than_seconds: float, limit: int = 500) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT id FROM certificate_authorities WHERE status = 'pending' AND type <> 'acme'"
        " AND updated_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
        older_than_seconds, limit)
    return [r["id"] for r in rows]


async def touch(conn: Executor, ids: list[UUID]) -> None:
    await conn.execute("UPDATE certificate_authorities SET updated_at = now() WHERE id = ANY($1::uuid[])", ids)


async def reserve_serial(conn: Executor, issuer_id: UUID, serial_number: str) -> None:
    """Record a serial as used by an issuer; the primary key makes reuse impossible (DESIGN.md 4.3)."""
    await conn.execute("INSERT INTO issued_serials (issuer_id, serial_number) VALUES ($1, $2)",
                       issuer_id, serial_number)


async def notify(conn: Executor, payload: str) -> None:
    """Wakes long-polling API requests; delivered when the surrounding transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)


async def lock_active(conn: Executor, ca_ids: list[UUID]) -> set[UUID]:
    """Inside the signing transaction: the CAs of ``ca_ids`` that are active, share-locked so that a
    disable (an UPDATE) waits for the certificates being stored, and none is stored after it."""
    rows = await conn.fetch(
        "SELECT id FROM certificate_authorities WHERE id = ANY($1::uuid[]) AND status = 'active'"
        " ORDER BY id FOR SHARE", ca_ids)
    return {r["id"] for r in rows}
