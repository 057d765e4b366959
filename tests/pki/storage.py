"""What a project holds in the database, read directly: proof that a refused request wrote nothing."""

from __future__ import annotations

from uuid import UUID

import asyncpg

_TABLES = ("certificate_authorities", "certificate_policies", "certificate_profiles", "audit_events",
           "project_data_keys", "applications")


async def fingerprint(db: asyncpg.Connection, project_id: str) -> list[tuple[str, str]]:
    """Every PKI row of a project, and its audit log, in full: an unchanged project compares equal."""
    rows: list[tuple[str, str]] = []
    for table in _TABLES:
        for r in await db.fetch(f"SELECT t::text AS row FROM {table} t WHERE project_id = $1 ORDER BY 1",
                                UUID(project_id)):
            rows.append((table, r["row"]))
    for r in await db.fetch("SELECT l::text AS row FROM application_profiles l JOIN applications a"
                            " ON a.id = l.application_id WHERE a.project_id = $1 ORDER BY 1", UUID(project_id)):
        rows.append(("application_profiles", r["row"]))
    return rows
