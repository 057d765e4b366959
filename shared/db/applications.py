"""Applications: named groups of a project's certificate profiles (DESIGN.md 5.5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor


@dataclass(frozen=True)
class ApplicationRow:
    id: UUID
    project_id: UUID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApplicationProfile:
    application_id: UUID
    profile_id: UUID
    profile_slug: str


_COLS = "id, project_id, name, description, created_at, updated_at"


def _row(row: Any) -> ApplicationRow:
    return ApplicationRow(**{k: row[k] for k in ApplicationRow.__dataclass_fields__})


async def insert(conn: Executor, *, project_id: UUID, name: str, description: str) -> ApplicationRow | None:
    """None if the project already has an application of that name."""
    row = await conn.fetchrow(
        f"INSERT INTO applications (project_id, name, description) VALUES ($1, $2, $3)"
        f" ON CONFLICT (project_id, name) DO NOTHING RETURNING {_COLS}", project_id, name, description)
    return None if row is None else _row(row)


async def get(conn: Executor, application_id: UUID, project_id: UUID) -> ApplicationRow | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM applications WHERE id = $1 AND project_id = $2",
                              application_id, project_id)
    return None if row is None else _row(row)


async def get_by_name(conn: Executor, project_id: UUID, name: str) -> ApplicationRow | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM applications WHERE project_id = $1 AND name = $2",
                              project_id, name)
    return None if row is None else _row(row)


async def list_page(conn: Executor, project_id: UUID, *, offset: int, limit: int) -> tuple[list[ApplicationRow], int]:
    rows = await conn.fetch(
        f"SELECT {_COLS}, count(*) OVER () AS total FROM applications WHERE project_id = $1"
        f" ORDER BY created_at, id OFFSET $2 LIMIT $3", project_id, offset, limit)
    total = rows[0]["total"] if rows else await conn.fetchval(
        "SELECT count(*) FROM applications WHERE project_id = $1", project_id)
    return [_row(r) for r in rows], int(total)


async def missing_profiles(conn: Executor, project_id: UUID, profile_ids: list[UUID]) -> list[UUID]:
    """The ids among ``profile_ids`` that are not profiles of the project."""
    found = {r["id"] for r in await conn.fetch(
        "SELECT id FROM certificate_profiles WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id,
        profile_ids)}
    return [p for p in profile_ids if p not in found]


async def attach(conn: Executor, application_id: UUID, profile_ids: list[UUID]) -> None:
    """Link the profiles (already checked to be of the application's project); existing links stay."""
    await conn.execute(
        "INSERT INTO application_profiles (application_id, profile_id) SELECT $1, unnest($2::uuid[])"
        " ON CONFLICT DO NOTHING", application_id, profile_ids)


async def detach(conn: Executor, application_id: UUID, profile_id: UUID) -> bool:
    done = await conn.fetchval(
        "DELETE FROM application_profiles WHERE application_id = $1 AND profile_id = $2 RETURNING profile_id",
        application_id, profile_id)
    return done is not None


async def profiles(conn: Executor, application_id: UUID) -> list[ApplicationProfile]:
    rows = await conn.fetch(
        "SELECT l.application_id, l.profile_id, p.slug FROM application_profiles l"
        " JOIN certificate_profiles p ON p.id = l.profile_id WHERE l.application_id = $1"
        " ORDER BY l.created_at, p.slug", application_id)
    return [ApplicationProfile(r["application_id"], r["profile_id"], r["slug"]) for r in rows]


async def holds_profile(conn: Executor, application_id: UUID, project_id: UUID, profile_id: UUID) -> bool:
    """Whether the project's application groups the profile (a request naming both must agree)."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM applications a JOIN application_profiles l ON l.application_id = a.id"
        " WHERE a.id = $1 AND a.project_id = $2 AND l.profile_id = $3", application_id, project_id, profile_id))
