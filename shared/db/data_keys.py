"""Wrapped per-project data keys and the check values of the root keys that wrap them.

``purpose`` names the root key: ``root`` (KMS_ROOT_KEY) or ``ca-root`` (KMS_CA_ROOT_KEY); each project has
at most one data key of each purpose.
"""

from __future__ import annotations

from uuid import UUID

from shared.db import Executor


async def get_wrapped(conn: Executor, project_id: UUID, purpose: str) -> bytes | None:
    wrapped: bytes | None = await conn.fetchval(
        "SELECT wrapped_key FROM project_data_keys WHERE project_id = $1 AND purpose = $2", project_id, purpose)
    return wrapped


async def insert_wrapped(conn: Executor, project_id: UUID, purpose: str, wrapped: bytes) -> None:
    await conn.execute(
        "INSERT INTO project_data_keys (project_id, purpose, wrapped_key) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING", project_id, purpose, wrapped)


async def all_wrapped_for_update(conn: Executor, purpose: str) -> dict[UUID, bytes]:
    rows = await conn.fetch("SELECT project_id, wrapped_key FROM project_data_keys WHERE purpose = $1"
                            " ORDER BY project_id FOR UPDATE", purpose)
    return {r["project_id"]: r["wrapped_key"] for r in rows}


async def update_wrapped(conn: Executor, project_id: UUID, purpose: str, wrapped: bytes) -> None:
    await conn.execute(
        "UPDATE project_data_keys SET wrapped_key = $3, rotated_at = now() WHERE project_id = $1 AND purpose = $2",
        project_id, purpose, wrapped)


async def root_key_check(conn: Executor, purpose: str, candidate: bytes) -> bytes:
    """The stored check value of the root key of ``purpose``; ``candidate`` becomes it when none is stored."""
    await conn.execute("INSERT INTO root_key_check (purpose, check_value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       purpose, candidate)
    stored: bytes = await conn.fetchval("SELECT check_value FROM root_key_check WHERE purpose = $1", purpose)
    return stored


async def set_root_key_check(conn: Executor, purpose: str, value: bytes) -> None:
    await conn.execute(
        "INSERT INTO root_key_check (purpose, check_value) VALUES ($1, $2)"
        " ON CONFLICT (purpose) DO UPDATE SET check_value = $2, updated_at = now()", purpose, value)
