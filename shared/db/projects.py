"""Projects: every SQL statement about them (their identities and tokens are in shared.db.identities)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from shared.db import Executor as Conn


@dataclass(frozen=True)
class Project:
    id: UUID
    name: str
    slug: str
    created_at: datetime


def _project(row: asyncpg.Record) -> Project:
    return Project(id=row["id"], name=row["name"], slug=row["slug"], created_at=row["created_at"])


async def insert_project(conn: Conn, name: str, slug: str) -> Project | None:
    """The new project, or None when ``slug`` is taken (the caller picks another; nothing is aborted)."""
    row = await conn.fetchrow(
        "INSERT INTO projects (name, slug) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING"
        " RETURNING id, name, slug, created_at",
        name, slug,
    )
    return None if row is None else _project(row)


async def project_by_slug(conn: Conn, slug: str) -> Project | None:
    row = await conn.fetchrow("SELECT id, name, slug, created_at FROM projects WHERE slug = $1", slug)
    return None if row is None else _project(row)


async def project_by_id(conn: Conn, project_id: UUID) -> Project | None:
    row = await conn.fetchrow("SELECT id, name, slug, created_at FROM projects WHERE id = $1", project_id)
    return None if row is None else _project(row)


async def project_exists(conn: Conn, project_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM projects WHERE id = $1", project_id))
