"""Machine identities and access tokens: every SQL statement about them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from shared.db import Executor as Conn


@dataclass(frozen=True)
class Identity:
    id: UUID
    project_id: UUID
    name: str
    role: str
    client_id: str
    created_at: datetime


@dataclass(frozen=True)
class IdentitySecret:
    identity: Identity
    secret_hash: str


_IDENTITY_COLS = "id, project_id, name, role, client_id, created_at"


def _identity(row: asyncpg.Record) -> Identity:
    return Identity(
        id=row["id"], project_id=row["project_id"], name=row["name"], role=row["role"],
        client_id=row["client_id"], created_at=row["created_at"],
    )


async def create_identity(
    conn: Conn, *, project_id: UUID, name: str, role: str, client_id: str, secret_hash: str
) -> Identity:
    row = await conn.fetchrow(
        f"INSERT INTO identities (project_id, name, role, client_id, secret_hash)"
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_IDENTITY_COLS}",
        project_id, name, role, client_id, secret_hash,
    )
    assert row is not None
    return _identity(row)


async def list_identities(conn: Conn, project_id: UUID) -> list[Identity]:
    rows = await conn.fetch(
        f"SELECT {_IDENTITY_COLS} FROM identities WHERE project_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at, id",
        project_id,
    )
    return [_identity(r) for r in rows]


async def delete_identity(conn: asyncpg.Connection, project_id: UUID, identity_id: UUID) -> bool:
    """Soft-delete the identity and delete its tokens in one transaction; False if not found."""
    async with conn.transaction():
        deleted = await conn.fetchval(
            "UPDATE identities SET deleted_at = now()"
            " WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL RETURNING id",
            identity_id, project_id,
        )
        if deleted is None:
            return False
        await conn.execute("DELETE FROM access_tokens WHERE identity_id = $1", identity_id)
        # Every API process drops the identity's cached tokens when this commits (shared.access.TokenCache).
        await conn.execute("SELECT pg_notify('kms_events', $1)", f"identity:{identity_id}")
    return True


async def identity_secret_by_client_id(conn: Conn, client_id: str) -> IdentitySecret | None:
    row = await conn.fetchrow(
        f"SELECT {_IDENTITY_COLS}, secret_hash FROM identities WHERE client_id = $1 AND deleted_at IS NULL",
        client_id,
    )
    return None if row is None else IdentitySecret(_identity(row), row["secret_hash"])


async def store_token(conn: Conn, *, digest: bytes, identity_id: UUID, ttl_seconds: int,
                      max_ttl_seconds: int) -> None:
    """A token that ends in ``ttl_seconds`` and may be renewed up to ``max_ttl_seconds`` after now."""
    # Expired tokens are swept here rather than by a job: logins are rare, and the index makes it cheap.
    await conn.execute(
        "WITH swept AS (DELETE FROM access_tokens WHERE expires_at < now() - interval '1 day')"
        " INSERT INTO access_tokens (token_digest, identity_id, expires_at, max_expires_at)"
        " VALUES ($1, $2, now() + make_interval(secs => $3), now() + make_interval(secs => $4))",
        digest, identity_id, float(min(ttl_seconds, max_ttl_seconds)), float(max_ttl_seconds),
    )


@dataclass(frozen=True)
class Renewed:
    expires_in: int  # seconds from now
    max_ttl: int  # seconds from the login to the end no renewal passes


async def renew_token(conn: Conn, *, digest: bytes, ttl_seconds: int) -> Renewed | None:
    """Moves a live token's end to ``ttl_seconds`` from now, capped at its login's maximum; None when the
    token is unknown, expired, or its identity was deleted."""
    row = await conn.fetchrow(
        "UPDATE access_tokens t SET expires_at = least(now() + make_interval(secs => $2), t.max_expires_at)"
        " FROM identities i"
        " WHERE t.token_digest = $1 AND t.expires_at > now() AND i.id = t.identity_id AND i.deleted_at IS NULL"
        " RETURNING floor(extract(epoch FROM t.expires_at - now()))::bigint AS expires_in,"
        " round(extract(epoch FROM t.max_expires_at - t.created_at))::bigint AS max_ttl",
        digest, float(ttl_seconds),
    )
    return None if row is None else Renewed(int(row["expires_in"]), int(row["max_ttl"]))


@dataclass(frozen=True)
class TokenLookup:
    identity: Identity
    expired: bool
    expires_at: datetime


async def identity_by_token(conn: Conn, digest: bytes) -> TokenLookup | None:
    row = await conn.fetchrow(
        f"SELECT {', '.join('i.' + c.strip() for c in _IDENTITY_COLS.split(','))},"
        " t.expires_at <= now() AS expired, t.expires_at"
        " FROM access_tokens t JOIN identities i ON i.id = t.identity_id"
        " WHERE t.token_digest = $1 AND i.deleted_at IS NULL",
        digest,
    )
    return None if row is None else TokenLookup(_identity(row), bool(row["expired"]), row["expires_at"])
