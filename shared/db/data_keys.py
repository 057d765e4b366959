"""Wrapped per-project data keys."""

from __future__ import annotations

from uuid import UUID

from shared.db import Executor


async def get_wrapped(conn: Executor, project_id: UUID) -> bytes | None:
    wrapped: bytes | None = await conn.fetchval(
        "SELECT wrapped_key FROM project_data_keys WHERE project_id = $1", project_id)
    return wrapped


async def insert_wrapped(conn: Executor, project_id: UUID, wrapped: bytes) -> None:
    await conn.execute(
        "INSERT INTO project_data_keys (project_id, wrapped_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        project_id, wrapped)


async def all_wrapped_for_update(conn: Executor) -> dict[UUID, bytes]:
    rows = await conn.fetch("SELECT project_id, wrapped_key FROM project_data_keys ORDER BY project_id FOR UPDATE")
    return {r["project_id"]: r["wrapped_key"] for r in rows}


async def update_wrapped(conn: Executor, project_id: UUID, wrapped: bytes) -> None:
    await conn.execute(
        "UPDATE project_data_keys SET wrapped_key = $2, rotated_at = now() WHERE project_id = $1",
        project_id, wrapped)


async def root_key_check(conn: Executor, candidate: bytes) -> bytes:
    """The stored root-key check value; ``candidate`` becomes it when none is stored yet."""
    await conn.execute("INSERT INTO root_key_check (check_value) VALUES ($1) ON CONFLICT DO NOTHING", candidate)
    stored: bytes = await conn.fetchval("SELECT check_value FROM root_key_check")
    return stored


async def set_root_key_check(conn: Executor, value: bytes) -> None:
    await conn.execute(
        "INSERT INTO root_key_check (check_value) VALUES ($1)"
        " ON CONFLICT (singleton) DO UPDATE SET check_value = $1, updated_at = now()", value)
