"""OCSP: the delegated responders of each CA and the status of one serial (DESIGN.md 7).

A status is read from ``certificates`` at the moment a request is answered (index
``certificates_issuer_serial_idx``), so a revocation committed a moment ago is already ``revoked``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor

TABLE = "ocsp_responders"


@dataclass(frozen=True)
class Responder:
    id: UUID
    ca_id: UUID
    project_id: UUID
    serial_number: str
    not_before: datetime
    not_after: datetime
    certificate_pem: str
    encrypted_private_key: bytes


@dataclass(frozen=True)
class SerialStatus:
    revoked_at: datetime | None
    revocation_reason: str | None


_COLS = ", ".join(Responder.__dataclass_fields__)


def _responder(row: Any) -> Responder:
    return Responder(**{k: row[k] for k in Responder.__dataclass_fields__})


async def current_responder(conn: Executor, ca_id: UUID, *, valid_for_seconds: float = 0) -> Responder | None:
    """The CA's newest responder still valid ``valid_for_seconds`` from now, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM {TABLE} WHERE ca_id = $1 AND not_before <= now()"
        " AND not_after > now() + make_interval(secs => $2) ORDER BY not_after DESC LIMIT 1",
        ca_id, valid_for_seconds)
    return None if row is None else _responder(row)


async def store_responder(conn: Executor, *, responder_id: UUID, ca_id: UUID, project_id: UUID,
                          serial_number: str, not_before: datetime, not_after: datetime, certificate_pem: str,
                          encrypted_private_key: bytes) -> None:
    """Store a responder with the audit event of the CA signature that made it (DESIGN.md invariant 11)."""
    await conn.execute(
        f"INSERT INTO {TABLE} (id, ca_id, project_id, serial_number, not_before, not_after, certificate_pem,"
        " encrypted_private_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        responder_id, ca_id, project_id, serial_number, not_before, not_after, certificate_pem,
        encrypted_private_key)
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, 'worker', 'ocsp.responder.sign', 'ca', $2, $3)",
        project_id, str(ca_id), {"responderId": str(responder_id), "serial": serial_number,
                                 "notAfter": not_after.isoformat()})
    # Responders expired for a day are of no use to anyone; their keys go with them.
    await conn.execute(f"DELETE FROM {TABLE} WHERE ca_id = $1 AND not_after < now() - interval '1 day'", ca_id)


async def cas_needing_responder(conn: Executor, margin_seconds: float) -> list[UUID]:
    """CAs with a key (a disabled CA's certificates still have a status) whose newest responder is
    missing or ends within ``margin_seconds``."""
    rows = await conn.fetch(
        "SELECT a.id FROM certificate_authorities a"
        f" LEFT JOIN LATERAL (SELECT max(not_after) AS not_after FROM {TABLE} r WHERE r.ca_id = a.id) r ON true"
        " WHERE a.status IN ('active', 'disabled') AND a.encrypted_private_key IS NOT NULL"
        " AND a.not_after > now()"
        " AND (r.not_after IS NULL OR r.not_after < least(now() + make_interval(secs => $1), a.not_after - interval"
        " '1 second'))", margin_seconds)
    return [r["id"] for r in rows]


async def serial_status(conn: Executor, ca_id: UUID, serial_hex: str) -> SerialStatus | None:
    """The revocation state of the certificate the CA issued with this serial (a leaf, or the certificate of
    an intermediate CA it signed, which is never revoked); None if it issued none."""
    row = await conn.fetchrow(
        "SELECT revoked_at, revocation_reason FROM certificates WHERE ca_id = $1 AND serial_number = $2"
        " UNION ALL SELECT NULL, NULL FROM certificate_authorities WHERE parent_ca_id = $1 AND serial_number = $2"
        " LIMIT 1", ca_id, serial_hex)
    return None if row is None else SerialStatus(row["revoked_at"], row["revocation_reason"])
