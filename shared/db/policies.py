"""Certificate policies and certificate profiles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor


@dataclass(frozen=True)
class PolicyRow:
    id: UUID
    project_id: UUID
    name: str
    description: str
    rules: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ProfileRow:
    id: UUID
    project_id: UUID
    slug: str
    description: str
    issuer_type: str
    ca_id: UUID | None
    certificate_policy_id: UUID
    enrollment_type: str
    api_config: dict[str, Any]
    defaults: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_POLICY_COLS = "id, project_id, name, description, rules, created_at, updated_at"
_PROFILE_COLS = ("id, project_id, slug, description, issuer_type, ca_id, certificate_policy_id, enrollment_type,"
                 " api_config, defaults, created_at, updated_at")


def _policy(row: Any) -> PolicyRow:
    return PolicyRow(**{k: row[k] for k in PolicyRow.__dataclass_fields__})


def _profile(row: Any) -> ProfileRow:
    return ProfileRow(**{k: row[k] for k in ProfileRow.__dataclass_fields__})


async def insert_policy(conn: Executor, *, project_id: UUID, name: str, description: str,
                        rules: dict[str, Any]) -> PolicyRow | None:
    row = await conn.fetchrow(
        f"INSERT INTO certificate_policies (project_id, name, description, rules) VALUES ($1, $2, $3, $4)"
        f" ON CONFLICT (project_id, name) DO NOTHING RETURNING {_POLICY_COLS}",
        project_id, name, description, rules)
    return None if row is None else _policy(row)


async def get_policy(conn: Executor, policy_id: UUID, project_id: UUID | None = None) -> PolicyRow | None:
    row = await conn.fetchrow(
        f"SELECT {_POLICY_COLS} FROM certificate_policies WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
        policy_id, project_id)
    return None if row is None else _policy(row)


async def list_policies(conn: Executor, project_id: UUID) -> list[PolicyRow]:
    rows = await conn.fetch(
        f"SELECT {_POLICY_COLS} FROM certificate_policies WHERE project_id = $1 ORDER BY created_at, id", project_id)
    return [_policy(r) for r in rows]


async def update_policy(conn: Executor, policy_id: UUID, *, name: str, description: str,
                        rules: dict[str, Any]) -> PolicyRow | None:
    """None if the new name is taken by another policy of the project."""
    row = await conn.fetchrow(
        f"UPDATE certificate_policies SET name = $2, description = $3, rules = $4, updated_at = now()"
        f" WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM certificate_policies o"
        f"   WHERE o.project_id = certificate_policies.project_id AND o.name = $2 AND o.id <> $1)"
        f" RETURNING {_POLICY_COLS}",
        policy_id, name, description, rules)
    return None if row is None else _policy(row)


async def delete_policy(conn: Executor, policy_id: UUID, project_id: UUID) -> str:
    """'deleted', 'missing', or 'in-use' (a profile still names it)."""
    if await conn.fetchval("SELECT 1 FROM certificate_profiles WHERE certificate_policy_id = $1 LIMIT 1", policy_id):
        return "in-use"
    done = await conn.fetchval(
        "DELETE FROM certificate_policies WHERE id = $1 AND project_id = $2 RETURNING id", policy_id, project_id)
    return "deleted" if done else "missing"


async def insert_profile(conn: Executor, *, project_id: UUID, slug: str, description: str, issuer_type: str,
                         ca_id: UUID | None, certificate_policy_id: UUID, enrollment_type: str,
                         api_config: dict[str, Any], defaults: dict[str, Any]) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"INSERT INTO certificate_profiles (project_id, slug, description, issuer_type, ca_id,"
        f" certificate_policy_id, enrollment_type, api_config, defaults)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        f" ON CONFLICT (project_id, slug) DO NOTHING RETURNING {_PROFILE_COLS}",
        project_id, slug, description, issuer_type, ca_id, certificate_policy_id, enrollment_type, api_config,
        defaults)
    return None if row is None else _profile(row)


async def get_profile(conn: Executor, profile_id: UUID, project_id: UUID | None = None) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"SELECT {_PROFILE_COLS} FROM certificate_profiles WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
        profile_id, project_id)
    return None if row is None else _profile(row)


async def get_profile_by_slug(conn: Executor, project_id: UUID, slug: str) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"SELECT {_PROFILE_COLS} FROM certificate_profiles WHERE project_id = $1 AND slug = $2", project_id, slug)
    return None if row is None else _profile(row)


async def list_profiles(conn: Executor, project_id: UUID) -> list[ProfileRow]:
    rows = await conn.fetch(
        f"SELECT {_PROFILE_COLS} FROM certificate_profiles WHERE project_id = $1 ORDER BY created_at, id", project_id)
    return [_profile(r) for r in rows]


async def update_profile(conn: Executor, profile_id: UUID, *, slug: str, description: str, issuer_type: str,
                         ca_id: UUID | None, certificate_policy_id: UUID, api_config: dict[str, Any],
                         defaults: dict[str, Any]) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"UPDATE certificate_profiles SET slug = $2, description = $3, issuer_type = $4, ca_id = $5,"
        f" certificate_policy_id = $6, api_config = $7, defaults = $8, updated_at = now()"
        f" WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM certificate_profiles o"
        f"   WHERE o.project_id = certificate_profiles.project_id AND o.slug = $2 AND o.id <> $1)"
        f" RETURNING {_PROFILE_COLS}",
        profile_id, slug, description, issuer_type, ca_id, certificate_policy_id, api_config, defaults)
    return None if row is None else _profile(row)


@dataclass(frozen=True)
class IssuingRows:
    profile: ProfileRow
    policy: PolicyRow
    ca: Any | None  # shared.db.authorities.Authority
    ca_key: bytes | None  # sealed CA key, only when asked for (worker)


async def issuing_rows(conn: Executor, profile_id: UUID, *, with_ca_key: bool = False) -> IssuingRows | None:
    """Profile, policy and CA of one profile in one round trip (the issuance hot path)."""
    from shared.db.authorities import Authority

    ca_fields = list(Authority.__dataclass_fields__)
    cols = ", ".join([*(f"p.{c} AS p_{c}" for c in ProfileRow.__dataclass_fields__),
                      *(f"y.{c} AS y_{c}" for c in PolicyRow.__dataclass_fields__),
                      *(f"a.{c} AS a_{c}" for c in ca_fields),
                      "a.encrypted_private_key AS a_key" if with_ca_key else "NULL::bytea AS a_key"])
    row = await conn.fetchrow(
        f"SELECT {cols} FROM certificate_profiles p JOIN certificate_policies y ON y.id = p.certificate_policy_id"
        f" LEFT JOIN certificate_authorities a ON a.id = p.ca_id WHERE p.id = $1", profile_id)
    if row is None:
        return None
    ca = None if row["a_id"] is None else Authority(**{c: row[f"a_{c}"] for c in ca_fields})
    return IssuingRows(ProfileRow(**{c: row[f"p_{c}"] for c in ProfileRow.__dataclass_fields__}),
                       PolicyRow(**{c: row[f"y_{c}"] for c in PolicyRow.__dataclass_fields__}), ca, row["a_key"])


async def delete_profile(conn: Executor, profile_id: UUID, project_id: UUID) -> bool:
    done = await conn.fetchval(
        "DELETE FROM certificate_profiles WHERE id = $1 AND project_id = $2 RETURNING id", profile_id, project_id)
    return done is not None
