"""Authentication and authorisation of machine identities (pure rules plus the calls the API makes)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar
from uuid import UUID

import asyncpg

from shared.db import audit, projects
from shared.db import identities as db
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.secrets import credentials

ROLE_RANK: Final = {"viewer": 0, "issuer": 1, "admin": 2}
# scrypt is slow on purpose (a core and 16 MiB for tens of milliseconds), so it runs off the event loop,
# in these few threads of its own: a login flood queues here, bounded in the CPU and memory it takes,
# and never fills the default executor that other work shares (small batches are evaluated there).
HASHING_THREADS: Final = 2
_hashing = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="kms-scrypt")
T = TypeVar("T")


@dataclass(frozen=True)
class Login:
    access_token: str
    expires_in: int  # seconds until the token ends
    max_ttl: int  # seconds from the login past which no renewal takes the token (accessTokenMaxTTL)


@dataclass(frozen=True)
class NewIdentity:
    identity: db.Identity
    client_secret: str


def authorize(identity: db.Identity, project_id: UUID, minimum_role: str) -> None:
    """Tenancy first: another project's resources answer 404 (not 403), so ids do not leak."""
    if identity.project_id != project_id:
        raise NotFound("no such project")
    if ROLE_RANK[identity.role] < ROLE_RANK[minimum_role]:
        raise Forbidden(f"this needs the {minimum_role} role; the identity has {identity.role}")


def can_read_private_keys(identity: db.Identity) -> bool:
    return ROLE_RANK[identity.role] >= ROLE_RANK["issuer"]


async def _hash(fn: Callable[..., T], *args: str) -> T:
    return await asyncio.get_running_loop().run_in_executor(_hashing, fn, *args)


# The same threads hash web users' passwords (shared.users), so sign-ins share the bound.
run_hashing = _hash


async def login(pool: asyncpg.Pool, client_id: str, client_secret: str, ttl_seconds: int,
                max_ttl_seconds: int) -> Login:
    """A new token that lasts ``ttl_seconds`` (never more than ``max_ttl_seconds``), renewable up to
    ``max_ttl_seconds`` after this login."""
    found = await db.identity_secret_by_client_id(pool, client_id)
    stored = found.secret_hash if found else credentials.DUMMY_HASH
    ok = await _hash(credentials.verify_secret, client_secret, stored)
    if found is None or not ok:
        raise Unauthorized("invalid client id or client secret")
    token = credentials.new_access_token()
    await db.store_token(pool, digest=credentials.token_digest(token), identity_id=found.identity.id,
                         ttl_seconds=ttl_seconds, max_ttl_seconds=max_ttl_seconds)
    return Login(token, min(ttl_seconds, max_ttl_seconds), max_ttl_seconds)


async def renew(pool: asyncpg.Pool, token: str, ttl_seconds: int) -> Login:
    """Upstream's token renewal: the same token, ending ``ttl_seconds`` from now but never past the end
    its login allowed. An expired, revoked or unknown token cannot be renewed (log in again)."""
    if not credentials.looks_like_token(token):
        raise Unauthorized("malformed access token")
    renewed = await db.renew_token(pool, digest=credentials.token_digest(token), ttl_seconds=ttl_seconds)
    if renewed is None:
        raise Unauthorized("unknown, revoked or expired access token; log in again")
    return Login(token, renewed.expires_in, renewed.max_ttl)


class TokenCache:
    """Recently seen access tokens (by digest) and their identities, so that a busy client's calls skip a
    database round trip. Safe because every way a token stops being valid is covered:

    - expiry: an entry is used only before the token's own ``expires_at``;
    - a deleted identity (which deletes its tokens): its commit NOTIFYs ``identity:<id>``, and each API
      process drops that identity's entries when the notification arrives (the deleting process at once);
    - a notification that may have been missed: the cache is used only while the LISTEN connection is
      up (``usable``), and emptied whenever it drops; and no entry is older than ``ttl_seconds``.
    """

    def __init__(self, usable: Callable[[], bool], *, ttl_seconds: float = 10.0, max_entries: int = 10_000) -> None:
        self._usable = usable
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[bytes, tuple[db.Identity, datetime, float]] = {}
        self._by_identity: dict[UUID, set[bytes]] = {}

    def get(self, digest: bytes) -> db.Identity | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        identity, expires_at, cached_at = entry
        if not self._usable() or time.monotonic() - cached_at > self._ttl or expires_at <= datetime.now(UTC):
            self._drop(digest, identity.id)
            return None
        return identity

    def put(self, digest: bytes, identity: db.Identity, expires_at: datetime) -> None:
        if not self._usable():
            return
        if len(self._entries) >= self._max:
            self.clear()
        self._entries[digest] = (identity, expires_at, time.monotonic())
        self._by_identity.setdefault(identity.id, set()).add(digest)

    def forget_identity(self, identity_id: UUID) -> None:
        for digest in self._by_identity.pop(identity_id, set()):
            self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()
        self._by_identity.clear()

    def _drop(self, digest: bytes, identity_id: UUID) -> None:
        self._entries.pop(digest, None)
        digests = self._by_identity.get(identity_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_identity[identity_id]


async def authenticate(pool: asyncpg.Pool, token: str, cache: TokenCache | None = None) -> db.Identity:
    if not credentials.looks_like_token(token):
        raise Unauthorized("malformed access token")
    digest = credentials.token_digest(token)
    if cache is not None and (cached := cache.get(digest)) is not None:
        return cached
    found = await db.identity_by_token(pool, digest)
    if found is None:
        raise Unauthorized("unknown or revoked access token")
    if found.expired:
        raise Unauthorized("access token expired; log in again")
    if cache is not None:
        cache.put(digest, found.identity, found.expires_at)
    return found.identity


async def create_identity(
    pool: asyncpg.Pool, *, project_id: UUID, name: str, role: str, actor: str
) -> NewIdentity:
    secret = credentials.new_client_secret()
    secret_hash = await _hash(credentials.hash_secret, secret)
    async with pool.acquire() as conn, conn.transaction():
        identity = await db.create_identity(
            conn, project_id=project_id, name=name, role=role,
            client_id=credentials.new_client_id(), secret_hash=secret_hash,
        )
        await audit.record(
            conn, project_id=project_id, actor=actor, action="identity.create",
            subject_type="identity", subject_id=str(identity.id), details={"role": role},
        )
    return NewIdentity(identity, secret)


async def delete_identity(pool: asyncpg.Pool, *, project_id: UUID, identity_id: UUID, actor: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if not await db.delete_identity(conn, project_id, identity_id):
            raise NotFound("no such identity")
        await audit.record(
            conn, project_id=project_id, actor=actor, action="identity.delete",
            subject_type="identity", subject_id=str(identity_id),
        )


_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
SLUG_BASE_LENGTH: Final = 48
SLUG: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # what migration 0008 checks (and at most 64 long)


def slug_of(name: str) -> str:
    """A project's slug from its name: lowercase letters and digits, runs of anything else one hyphen
    (``"Payments Team (EU)"`` -> ``"payments-team-eu"``); migration 0008 backfills by the same rule."""
    slug = _NOT_SLUG.sub("-", name.lower()).strip("-")[:SLUG_BASE_LENGTH].strip("-")
    return slug or "project"


async def create_project(conn: asyncpg.Connection, name: str) -> projects.Project:
    """A new project whose slug comes from its name; a slug already taken gets a random suffix."""
    base = slug_of(name)
    slug = base
    for _ in range(8):
        made = await projects.insert_project(conn, name, slug)
        if made is not None:
            return made
        slug = f"{base}-{secrets.token_hex(3)}"
    raise RuntimeError(f"no free slug for project {name!r}")  # 8 random suffixes all taken: not by chance


async def bootstrap_project(pool: asyncpg.Pool, project_name: str) -> tuple[projects.Project, NewIdentity]:
    """A new project and its first admin identity (the `kms-pki admin bootstrap` command)."""
    async with pool.acquire() as conn, conn.transaction():
        project = await create_project(conn, project_name)
        await audit.record(conn, project_id=project.id, actor="cli", action="project.create",
                           subject_type="project", subject_id=str(project.id), details={"slug": project.slug})
    new = await create_identity(pool, project_id=project.id, name="admin", role="admin", actor="cli")
    return project, new


async def bootstrap(pool: asyncpg.Pool, project_name: str) -> tuple[UUID, NewIdentity]:
    """``bootstrap_project`` for callers that need only the project's id."""
    project, new = await bootstrap_project(pool, project_name)
    return project.id, new


async def project_by_slug(pool: asyncpg.Pool, identity: db.Identity, slug: str) -> projects.Project:
    """The caller's project by its slug; any other project's slug is as unknown as one that is not there."""
    found = await projects.project_by_slug(pool, slug) if len(slug) <= 64 and SLUG.fullmatch(slug) else None
    if found is None or found.id != identity.project_id:
        raise NotFound(f"no project with slug {slug!r}")
    return found


async def list_identities(pool: asyncpg.Pool, project_id: UUID) -> list[db.Identity]:
    return await db.list_identities(pool, project_id)
