"""Certificate profiles as issuance sees them: the issuing context (profile, policy rules, defaults, CA),
its short-lived cache, and the checks on a profile's links (the HTTP models are in ``api.profiles``)."""

from __future__ import annotations

import time
from uuid import UUID

from shared.db import Executor
from shared.db import authorities as ca_db
from shared.db import policies as db
from shared.errors import BadRequest, Conflict, FieldError, NotFound
from shared.policy.attributes import ProfileDefaults
from shared.policy.rules import STORED, PolicyRules


async def check_profile_links(conn: Executor, project_id: UUID, issuer_type: str, ca_id: UUID | None,
                              policy_id: UUID) -> None:
    """The CA and policy must exist in the same project (404 otherwise, so ids of others do not leak)."""
    if issuer_type == "ca":
        if ca_id is None:
            raise BadRequest("issuerType ca needs a caId", [FieldError("caId", "required for issuerType ca")])
        if await ca_db.get(conn, ca_id, project_id) is None:
            raise NotFound("no such CA", [FieldError("caId", "no such CA in this project")])
    elif ca_id is not None:
        raise BadRequest("a self-signed profile has no CA", [FieldError("caId", "forbidden for self-signed")])
    if await db.get_policy(conn, policy_id, project_id) is None:
        raise NotFound("no such certificate policy",
                       [FieldError("certificatePolicyId", "no such policy in this project")])


def slug_taken(slug: str) -> Conflict:
    return Conflict(f"a profile with slug {slug!r} already exists in this project", [FieldError("slug", "in use")])


def name_taken(name: str) -> Conflict:
    return Conflict(f"a policy named {name!r} already exists in this project", [FieldError("name", "in use")])


class IssuingContext:
    """What issuance needs from a profile: the profile, its policy's rules, its defaults, its CA.

    The API caches these for a couple of seconds (a changed policy is still enforced by the worker,
    which always reads the current one: DESIGN.md invariant 6).
    """

    def __init__(self, rows: db.IssuingRows) -> None:
        self.profile = rows.profile
        self.rules = PolicyRules.model_validate(rows.policy.rules, context=STORED)
        self.defaults = ProfileDefaults.model_validate(rows.profile.defaults)
        self.ca = rows.ca
        self.ca_status: str | None = rows.ca.status if rows.ca is not None else None
        self.ca_key = rows.ca_key


async def load_issuing_context(conn: Executor, profile_id: UUID, *, with_ca_key: bool = False
                               ) -> IssuingContext | None:
    rows = await db.issuing_rows(conn, profile_id, with_ca_key=with_ca_key)
    return None if rows is None else IssuingContext(rows)


class IssuingContextCache:
    def __init__(self, ttl_seconds: float = 2.0) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[UUID, tuple[float, IssuingContext]] = {}

    async def get(self, conn: Executor, profile_id: UUID) -> IssuingContext | None:
        now = time.monotonic()
        hit = self._entries.get(profile_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        ctx = await load_issuing_context(conn, profile_id)
        if ctx is not None:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[profile_id] = (now + self._ttl, ctx)
        return ctx
