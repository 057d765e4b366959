"""Human users of the web UI: accounts, sign-in and sessions (the machine identities are shared.access).

A user holds, per project, one of the roles machine identities have (``shared.access.ROLE_RANK``), and
the web UI authorizes them with the same ``shared.access.authorize``: a user acting in a project is seen
as an ``Identity`` of that project with that role (``acting_as``), so tenancy (another project's
resources are 404) and roles follow the same rules as on the API.

Passwords are hashed like client secrets (scrypt, ``shared.secrets.credentials``), off the event loop.
A session is a random cookie value; only its SHA-256 digest is stored, with the CSRF token of the
session's forms and an idle expiry moved forward on each request.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final
from uuid import UUID

import asyncpg

from shared import access
from shared.db import audit, projects
from shared.db import users as db
from shared.db.identities import Identity
from shared.errors import Conflict, FieldError, NotFound, Unauthorized, ValidationFailure
from shared.secrets import credentials

SESSION_PREFIX: Final = "kms_ws_"
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 200
_EMAIL: Final = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s.]{1,63}")


@dataclass(frozen=True)
class NewSession:
    cookie_value: str
    csrf_token: str


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_new_user(email: str, password: str, role: str) -> list[FieldError]:
    """Every reason the account cannot be made, at once."""
    errors = []
    if not _EMAIL.fullmatch(normalise_email(email)):
        errors.append(FieldError("email", "enter an e-mail address such as name@example.com"))
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        errors.append(FieldError("password", f"use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"))
    if role not in access.ROLE_RANK:
        errors.append(FieldError("role", "choose admin, issuer or viewer"))
    return errors


async def create_user(pool: asyncpg.Pool, *, email: str, password: str, project_id: UUID, role: str,
                      actor: str) -> db.User:
    """A new user with ``role`` in ``project_id``; an address already taken is a 409."""
    errors = check_new_user(email, password, role)
    if errors:
        raise ValidationFailure("the user cannot be created", errors)
    password_hash = await access.run_hashing(credentials.hash_secret, password)
    async with pool.acquire() as conn, conn.transaction():
        if not await projects.project_exists(conn, project_id):
            raise NotFound("no such project", [FieldError("project", "no such project")])
        user = await db.insert_user(conn, normalise_email(email), password_hash)
        if user is None:
            raise Conflict("a user with this e-mail address exists", [FieldError("email", "already taken")])
        await db.set_role(conn, user.id, project_id, role)
        await audit.record(conn, project_id=project_id, actor=actor, action="user.create", subject_type="user",
                           subject_id=str(user.id), details={"role": role})
    return user


async def sign_in(pool: asyncpg.Pool, email: str, password: str, idle_seconds: float) -> NewSession:
    """A new session for the user, or Unauthorized (the same for an unknown address and a wrong password,
    at the same cost)."""
    found = await db.user_by_email(pool, normalise_email(email)) if len(password) <= MAX_PASSWORD_LENGTH else None
    stored = found[1] if found else credentials.DUMMY_HASH
    ok = await access.run_hashing(credentials.verify_secret, password[:MAX_PASSWORD_LENGTH], stored)
    if found is None or not ok:
        raise Unauthorized("wrong e-mail address or password")
    value = SESSION_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await db.insert_session(pool, digest=credentials.token_digest(value), user_id=found[0].id, csrf_token=csrf,
                            idle_seconds=idle_seconds)
    # Sessions left to expire (never signed out) are removed here, a few at a time as people sign in.
    await db.delete_expired_sessions(pool)
    return NewSession(value, csrf)


def _looks_like_session(value: str) -> bool:
    body = value[len(SESSION_PREFIX):]
    return value.startswith(SESSION_PREFIX) and 40 <= len(body) <= 64 and all(c.isalnum() or c in "-_" for c in body)


async def session(pool: asyncpg.Pool, cookie_value: str | None, idle_seconds: float) -> db.Session | None:
    """The live session a cookie names (its idle expiry renewed), or None."""
    if not cookie_value or not _looks_like_session(cookie_value):
        return None
    return await db.touch_session(pool, credentials.token_digest(cookie_value), idle_seconds)


async def sign_out(pool: asyncpg.Pool, cookie_value: str) -> None:
    if _looks_like_session(cookie_value):
        await db.delete_session(pool, credentials.token_digest(cookie_value))


def csrf_matches(current: db.Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(current.csrf_token.encode(), sent.encode())


async def acting_as(pool: asyncpg.Pool, user: db.User, project_id: UUID) -> Identity:
    """The user as an identity of ``project_id`` with their role there; a project they have no role in is
    as unknown as one that does not exist (404)."""
    role = await db.role_in(pool, user.id, project_id)
    if role is None:
        raise NotFound("no such project")
    identity = Identity(id=user.id, project_id=project_id, name=user.email, role=role, client_id="",
                        created_at=user.created_at)
    access.authorize(identity, project_id, "viewer")
    return identity


def actor(user: db.User) -> str:
    return f"user:{user.id}"
