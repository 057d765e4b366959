"""Certificate policies and certificate profiles."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor, fetch_planned
from shared.db.requests import CHAIN_JOIN, CertificateRow, cert_columns


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
    acme_config: dict[str, Any] | None = None
    est_config: dict[str, Any] | None = None
    external_configs: dict[str, Any] | None = None


_POLICY_COLS = "id, project_id, name, description, rules, created_at, updated_at"
_PROFILE_COLS = ("id, project_id, slug, description, issuer_type, ca_id, certificate_policy_id, enrollment_type,"
                 " api_config, defaults, created_at, updated_at, acme_config, est_config, external_configs")


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


def _like(search: str | None) -> str | None:
    """A case-insensitive substring pattern for ``search`` (LIKE's wildcards in it match themselves)."""
    if not search:
        return None
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_policies(conn: Executor, project_id: UUID, *, offset: int = 0, limit: int = 100,
                        search: str | None = None) -> tuple[list[PolicyRow], int]:
    """One page of a project's policies (oldest first) and how many match in all."""
    rows = await conn.fetch(
        f"SELECT {_POLICY_COLS}, count(*) OVER () AS total FROM certificate_policies"
        f" WHERE project_id = $1 AND ($2::text IS NULL OR name ILIKE $2 OR description ILIKE $2)"
        f" ORDER BY created_at, id OFFSET $3 LIMIT $4", project_id, _like(search), offset, limit)
    total = rows[0]["total"] if rows else await conn.fetchval(
        "SELECT count(*) FROM certificate_policies"
        " WHERE project_id = $1 AND ($2::text IS NULL OR name ILIKE $2 OR description ILIKE $2)",
        project_id, _like(search))
    return [_policy(r) for r in rows], int(total)


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
                         api_config: dict[str, Any], defaults: dict[str, Any],
                         acme_config: dict[str, Any] | None = None, est_config: dict[str, Any] | None = None,
                         external_configs: dict[str, Any] | None = None) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"INSERT INTO certificate_profiles (project_id, slug, description, issuer_type, ca_id,"
        f" certificate_policy_id, enrollment_type, api_config, defaults, acme_config, est_config, external_configs)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        f" ON CONFLICT (project_id, slug) DO NOTHING RETURNING {_PROFILE_COLS}",
        project_id, slug, description, issuer_type, ca_id, certificate_policy_id, enrollment_type, api_config,
        defaults, acme_config, est_config, external_configs)
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


_PROFILE_FILTER = ("project_id = $1 AND ($2::text IS NULL OR slug ILIKE $2 OR description ILIKE $2)"
                   " AND ($3::text IS NULL OR enrollment_type = $3) AND ($4::text IS NULL OR issuer_type = $4)"
                   " AND ($5::uuid IS NULL OR ca_id = $5)")


async def list_profiles(conn: Executor, project_id: UUID, *, offset: int = 0, limit: int = 100,
                        search: str | None = None, enrollment_type: str | None = None,
                        issuer_type: str | None = None, ca_id: UUID | None = None) -> tuple[list[ProfileRow], int]:
    """One page of a project's profiles (oldest first) and how many match the filters in all."""
    args = (project_id, _like(search), enrollment_type, issuer_type, ca_id)
    rows = await conn.fetch(
        f"SELECT {_PROFILE_COLS}, count(*) OVER () AS total FROM certificate_profiles WHERE {_PROFILE_FILTER}"
        f" ORDER BY created_at, id OFFSET $6 LIMIT $7", *args, offset, limit)
    total = rows[0]["total"] if rows else await conn.fetchval(
        f"SELECT count(*) FROM certificate_profiles WHERE {_PROFILE_FILTER}", *args)
    return [_profile(r) for r in rows], int(total)


async def update_profile(conn: Executor, profile_id: UUID, *, slug: str, description: str, issuer_type: str,
                         ca_id: UUID | None, certificate_policy_id: UUID, api_config: dict[str, Any],
                         defaults: dict[str, Any], acme_config: dict[str, Any] | None = None,
                         est_config: dict[str, Any] | None = None,
                         external_configs: dict[str, Any] | None = None) -> ProfileRow | None:
    row = await conn.fetchrow(
        f"UPDATE certificate_profiles SET slug = $2, description = $3, issuer_type = $4, ca_id = $5,"
        f" certificate_policy_id = $6, api_config = $7, defaults = $8, acme_config = $9, est_config = $10,"
        f" external_configs = $11, updated_at = now()"
        f" WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM certificate_profiles o"
        f"   WHERE o.project_id = certificate_profiles.project_id AND o.slug = $2 AND o.id <> $1)"
        f" RETURNING {_PROFILE_COLS}",
        profile_id, slug, description, issuer_type, ca_id, certificate_policy_id, api_config, defaults,
        acme_config, est_config, external_configs)
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


_CERT_FILTER = ("profile_id = $1 AND ($2::text IS NULL OR CASE $2 WHEN 'revoked' THEN revoked_at IS NOT NULL"
                " WHEN 'active' THEN revoked_at IS NULL AND not_after > now()"
                " ELSE revoked_at IS NULL AND not_after <= now() END)")
# Read through certificates_common_name_trgm_idx and certificates_serial_trgm_idx (migration 0022) instead
# of every certificate of the profile; a search of fewer than 3 characters (no trigram) still reads them all.
_CERT_SEARCH = " AND (common_name ILIKE $3 OR serial_number ILIKE $3)"


async def profile_certificates(conn: Executor, profile_id: UUID, *, offset: int, limit: int,
                               status: str | None = None, search: str | None = None
                               ) -> tuple[list[CertificateRow], int]:
    """A page of the certificates issued with a profile (newest first) and how many match in all.

    ``status`` is ``active`` (not revoked, not yet past notAfter), ``revoked`` or ``expired``; ``search``
    matches the common name or the serial number.
    """
    fields = list(CertificateRow.__dataclass_fields__)
    args: list[Any] = [profile_id, status]
    where = _CERT_FILTER
    pattern = _like(search)
    if pattern is not None:
        args.append(pattern)
        where += _CERT_SEARCH
    # A search is planned for its pattern each time (see fetch_planned).
    fetch = functools.partial(fetch_planned, conn) if pattern is not None else conn.fetch
    # The page alone (read in order from certificates_profile_page_idx), then the total: for the whole
    # profile the running count of migration 0021, for a filter a count of what matches.
    rows = await fetch(
        f"SELECT {cert_columns()} FROM certificates c{CHAIN_JOIN} WHERE {where}"
        f" ORDER BY created_at DESC, id OFFSET ${len(args) + 1} LIMIT ${len(args) + 2}", *args, offset, limit)
    if status is None and pattern is None:
        total = await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM profile_certificate_counts WHERE profile_id = $1", profile_id)
    else:
        total = (await fetch(f"SELECT count(*) FROM certificates WHERE {where}", *args))[0][0]
    return [CertificateRow(**{k: r[k] for k in fields}) for r in rows], int(total)


async def latest_active_certificate(conn: Executor, profile_id: UUID) -> CertificateRow | None:
    """The profile's newest certificate that is valid now, or None."""
    fields = list(CertificateRow.__dataclass_fields__)
    row = await conn.fetchrow(
        f"SELECT {cert_columns()} FROM certificates c{CHAIN_JOIN} WHERE profile_id = $1 AND not_after > now()"
        f" AND revoked_at IS NULL AND not_before <= now() ORDER BY not_before DESC, created_at DESC, id LIMIT 1",
        profile_id)
    return None if row is None else CertificateRow(**{k: row[k] for k in fields})
