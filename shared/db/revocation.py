"""Revocations and CRLs: every SQL statement of DESIGN.md 7's revocation half.

Revoking a certificate and signing a CRL of its CA take the CA row lock in opposite strengths (a revoke
``FOR SHARE``, a CRL ``FOR UPDATE``), and a revocation's time is the clock after that lock: so a CRL
whose ``covered_at`` is later than every revocation of its CA lists them all, and a task that finds
the newest CRL covering every revocation has nothing to add (a burst of revocations shares one CRL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor


@dataclass(frozen=True)
class Revoked:
    serial_number: str
    revoked_at: datetime
    revocation_reason: str | None


@dataclass(frozen=True)
class CrlRow:
    id: UUID
    ca_id: UUID
    crl_number: int
    this_update: datetime
    next_update: datetime
    covered_at: datetime
    der: bytes
    created_at: datetime


_CRL_COLS = ", ".join(CrlRow.__dataclass_fields__)


def _crl(row: Any) -> CrlRow:
    return CrlRow(**{k: row[k] for k in CrlRow.__dataclass_fields__})


async def revoke(conn: Executor, certificate_id: UUID, project_id: UUID, reason: str, actor: str
                 ) -> tuple[str, datetime] | None:
    """Mark the certificate revoked (with its audit event); its (serial, revokedAt), or None when it was
    already revoked. The caller holds a transaction and has checked the certificate exists."""
    ca_id = await conn.fetchval("SELECT ca_id FROM certificates WHERE id = $1 AND project_id = $2",
                                certificate_id, project_id)
    if ca_id is not None:
        await conn.execute("SELECT 1 FROM certificate_authorities WHERE id = $1 FOR SHARE", ca_id)
    row = await conn.fetchrow(
        "UPDATE certificates SET revoked_at = clock_timestamp(), revocation_reason = $3"
        " WHERE id = $1 AND project_id = $2 AND revoked_at IS NULL AND deleted_at IS NULL"
        " RETURNING serial_number, revoked_at, ca_id", certificate_id, project_id, reason)
    if row is None:
        return None
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, 'certificate.revoke', 'certificate', $3, $4)",
        project_id, actor, str(certificate_id),
        {"serial": row["serial_number"], "reason": reason, "issuer": str(row["ca_id"]) if row["ca_id"] else None})
    return row["serial_number"], row["revoked_at"]


async def is_revoked(conn: Executor, certificate_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT revoked_at IS NOT NULL FROM certificates WHERE id = $1", certificate_id))


async def lock_ca(conn: Executor, ca_id: UUID) -> datetime:
    """Take the CA's CRL lock (waiting for revocations in flight) and return the clock after it."""
    await conn.execute("SELECT 1 FROM certificate_authorities WHERE id = $1 FOR UPDATE", ca_id)
    moment: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return moment


async def revoked_serials(conn: Executor, ca_id: UUID, previous_this_update: datetime | None = None
                          ) -> list[Revoked]:
    """Every revoked serial a CRL of the CA signed now must list. RFC 5280 section 3.3: an entry leaves
    the CRL only after it has appeared on one CRL issued beyond the certificate's validity period. So a
    revoked certificate is listed while its notAfter is not before ``previous_this_update``, the
    thisUpdate of the CA's newest CRL: one that expired before that was on that CRL, issued past its
    notAfter, and leaves now. Without a previous CRL nobody has seen an entry yet: the unexpired only."""
    rows = await conn.fetch(
        "SELECT serial_number, revoked_at, revocation_reason FROM certificates"
        " WHERE ca_id = $1 AND revoked_at IS NOT NULL AND not_after >= coalesce($2::timestamptz, now())"
        " ORDER BY revoked_at, serial_number",
        ca_id, previous_this_update)
    return [Revoked(r["serial_number"], r["revoked_at"], r["revocation_reason"]) for r in rows]


async def latest_revocation(conn: Executor, ca_id: UUID) -> datetime | None:
    found: datetime | None = await conn.fetchval(
        "SELECT max(revoked_at) FROM certificates WHERE ca_id = $1 AND revoked_at IS NOT NULL", ca_id)
    return found


async def latest_crl(conn: Executor, ca_id: UUID) -> CrlRow | None:
    row = await conn.fetchrow(
        f"SELECT {_CRL_COLS} FROM certificate_revocation_lists WHERE ca_id = $1 ORDER BY crl_number DESC LIMIT 1",
        ca_id)
    return None if row is None else _crl(row)


async def crls(conn: Executor, ca_id: UUID) -> list[CrlRow]:
    """The CA's current CRL as a list (upstream's ``/crls`` shape: one CRL per CA, the newest)."""
    found = await latest_crl(conn, ca_id)
    return [found] if found is not None else []


async def store_crl(conn: Executor, *, ca_id: UUID, project_id: UUID, crl_number: int, this_update: datetime,
                    next_update: datetime, covered_at: datetime, der: bytes, entries: int) -> UUID:
    """Store a signed CRL with its audit event in the caller's transaction (DESIGN.md invariant 11)."""
    crl_id: UUID = await conn.fetchval(
        "INSERT INTO certificate_revocation_lists (ca_id, crl_number, this_update, next_update, covered_at, der)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        ca_id, crl_number, this_update, next_update, covered_at, der)
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, 'worker', 'crl.sign', 'ca', $2, $3)",
        project_id, str(ca_id), {"crlId": str(crl_id), "crlNumber": crl_number, "entries": entries,
                                 "nextUpdate": next_update.isoformat()})
    return crl_id


async def cas_needing_crl(conn: Executor, margin_seconds: float) -> list[UUID]:
    """CAs with a key (a disabled one's revocations still matter) whose newest CRL is missing, or ends
    within ``margin_seconds``."""
    rows = await conn.fetch(
        "SELECT a.id FROM certificate_authorities a"
        " LEFT JOIN LATERAL (SELECT next_update FROM certificate_revocation_lists l WHERE l.ca_id = a.id"
        "                    ORDER BY crl_number DESC LIMIT 1) l ON true"
        " WHERE a.status IN ('active', 'disabled') AND a.encrypted_private_key IS NOT NULL"
        " AND (l.next_update IS NULL OR l.next_update < now() + make_interval(secs => $1))", margin_seconds)
    return [r["id"] for r in rows]
