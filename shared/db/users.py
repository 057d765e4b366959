"""Human users of the web UI, their project roles and their sessions: every SQL statement about them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from shared.db import Executor


@dataclass(frozen=True)
class User:
    id: UUID
    email: str
    created_at: datetime


@dataclass(frozen=True)
class Membership:
    project_id: UUID
    project_name: str
    project_slug: str
    role: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class ProjectMember:
    user: User
    role: str


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], email=row["email"], created_at=row["created_at"])


async def insert_user(conn: Executor, email: str, password_hash: str) -> User | None:
    """The new user, or None when the address is taken."""
    row = await conn.fetchrow(
        "INSERT INTO web_users (email, password_hash) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING"
        " RETURNING id, email, created_at", email, password_hash)
    return None if row is None else _user(row)


async def user_by_email(conn: Executor, email: str) -> tuple[User, str] | None:
    """The user and the stored password hash."""
    row = await conn.fetchrow("SELECT id, email, created_at, password_hash FROM web_users WHERE email = $1", email)
    return None if row is None else (_user(row), row["password_hash"])


async def set_role(conn: Executor, user_id: UUID, project_id: UUID, role: str) -> None:
    await conn.execute(
        "INSERT INTO web_user_roles (user_id, project_id, role) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id, project_id) DO UPDATE SET role = EXCLUDED.role", user_id, project_id, role)


async def memberships(conn: Executor, user_id: UUID) -> list[Membership]:
    rows = await conn.fetch(
        "SELECT p.id, p.name, p.slug, r.role FROM web_user_roles r JOIN projects p ON p.id = r.project_id"
        " WHERE r.user_id = $1 ORDER BY p.name, p.id", user_id)
    return [Membership(r["id"], r["name"], r["slug"], r["role"]) for r in rows]


async def role_in(conn: Executor, user_id: UUID, project_id: UUID) -> str | None:
    role: str | None = await conn.fetchval(
        "SELECT role FROM web_user_roles WHERE user_id = $1 AND project_id = $2", user_id, project_id)
    return role


async def project_members(conn: Executor, project_id: UUID) -> list[ProjectMember]:
    rows = await conn.fetch(
        "SELECT u.id, u.email, u.created_at, r.role FROM web_user_roles r JOIN web_users u ON u.id = r.user_id"
        " WHERE r.project_id = $1 ORDER BY u.email", project_id)
    return [ProjectMember(_user(r), r["role"]) for r in rows]


async def insert_session(conn: Executor, *, digest: bytes, user_id: UUID, csrf_token: str,
                         idle_seconds: float) -> None:
    await conn.execute(
        "INSERT INTO web_sessions (digest, user_id, csrf_token, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4))", digest, user_id, csrf_token, idle_seconds)


async def touch_session(conn: Executor, digest: bytes, idle_seconds: float) -> Session | None:
    """The live session of ``digest``, its idle expiry moved to ``idle_seconds`` from now; None when it is
    unknown, ended or idle too long (an expired row is removed on the way)."""
    row = await conn.fetchrow(
        """WITH live AS (
               UPDATE web_sessions SET expires_at = now() + make_interval(secs => $2)
                WHERE digest = $1 AND expires_at > now()
            RETURNING user_id, csrf_token, expires_at)
           SELECT u.id, u.email, u.created_at, live.csrf_token, live.expires_at
             FROM live JOIN web_users u ON u.id = live.user_id""", digest, idle_seconds)
    if row is None:
        await conn.execute("DELETE FROM web_sessions WHERE digest = $1 AND expires_at <= now()", digest)
        return None
    return Session(_user(row), row["csrf_token"], row["expires_at"])


async def delete_session(conn: Executor, digest: bytes) -> None:
    await conn.execute("DELETE FROM web_sessions WHERE digest = $1", digest)


async def delete_expired_sessions(conn: Executor, limit: int = 1000) -> int:
    done: str = await conn.execute(
        "DELETE FROM web_sessions WHERE digest IN"
        " (SELECT digest FROM web_sessions WHERE expires_at <= now() LIMIT $1)", limit)
    return int(done.split()[-1])
