"""The append-only audit log. Callers pass a connection so an event joins the caller's transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.db import Executor


async def record(
    conn: Executor,
    *,
    project_id: UUID | None,
    actor: str,
    action: str,
    subject_type: str | None = None,
    subject_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        project_id, actor, action, subject_type, subject_id, details or {},
    )


async def record_key_reads(conn: Executor, project_id: UUID, actor: str, certificate_ids: list[UUID],
                           route: str) -> None:
    """One ``certificate.private_key.read`` event per key handed out, in one statement for a whole page."""
    if certificate_ids:
        await conn.execute(
            "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
            " SELECT $1, $2, 'certificate.private_key.read', 'certificate', id::text,"
            " jsonb_build_object('route', $4::text)"
            " FROM unnest($3::uuid[]) AS id",
            project_id, actor, certificate_ids, route)
