"""Certificate policies and profiles as the API sees them: bodies, checks and read models."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, ValidationError

from shared.camel import CamelModel
from shared.db import Executor
from shared.db import authorities as ca_db
from shared.db import policies as db
from shared.db.policies import PolicyRow, ProfileRow
from shared.errors import BadRequest, Conflict, FieldError, NotFound
from shared.policy.attributes import ApiConfig, ProfileDefaults
from shared.policy.rules import STORED, PolicyRules

Name = Annotated[str, Field(min_length=1, max_length=100)]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class CreatePolicyBody(PolicyRules):
    project_id: UUID
    name: Name
    description: str = Field(default="", max_length=1000)


class UpdatePolicyBody(PolicyRules):
    """PATCH: the fields given replace the stored ones; the rest stay as they are."""

    name: Name | None = None
    description: str | None = Field(default=None, max_length=1000)


class PolicyView(PolicyRules):
    id: UUID
    project_id: UUID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: PolicyRow) -> PolicyView:
        return cls.model_validate({**row.rules, "id": row.id, "projectId": row.project_id, "name": row.name,
                                   "description": row.description, "createdAt": row.created_at,
                                   "updatedAt": row.updated_at}, context=STORED)


class PolicyList(CamelModel):
    items: list[PolicyView]


def rules_json(rules: PolicyRules) -> dict[str, Any]:
    return PolicyRules.model_validate(rules.model_dump(include=set(PolicyRules.model_fields))) \
        .model_dump(mode="json", by_alias=True)


def merged_rules(row: PolicyRow, patch: UpdatePolicyBody) -> dict[str, Any]:
    given = patch.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"name", "description"})
    try:
        return PolicyRules.model_validate({**row.rules, **given}).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:  # pragma: no cover - each part was validated already
        raise BadRequest("the merged policy is invalid", [FieldError("body", str(exc))]) from None


class CreateProfileBody(CamelModel):
    project_id: UUID
    slug: Slug
    description: str = Field(default="", max_length=1000)
    issuer_type: Literal["ca", "self-signed"]
    ca_id: UUID | None = None
    certificate_policy_id: UUID
    enrollment_type: Literal["api"] = "api"
    api_config: ApiConfig = Field(default_factory=ApiConfig)
    defaults: ProfileDefaults = Field(default_factory=ProfileDefaults)


class UpdateProfileBody(CamelModel):
    slug: Slug | None = None
    description: str | None = Field(default=None, max_length=1000)
    issuer_type: Literal["ca", "self-signed"] | None = None
    ca_id: UUID | None = None
    certificate_policy_id: UUID | None = None
    api_config: ApiConfig | None = None
    defaults: ProfileDefaults | None = None


class ProfileView(CamelModel):
    id: UUID
    project_id: UUID
    slug: str
    description: str
    issuer_type: str
    ca_id: UUID | None
    certificate_policy_id: UUID
    enrollment_type: str
    api_config: ApiConfig
    defaults: ProfileDefaults
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ProfileRow) -> ProfileView:
        return cls(id=row.id, project_id=row.project_id, slug=row.slug, description=row.description,
                   issuer_type=row.issuer_type, ca_id=row.ca_id, certificate_policy_id=row.certificate_policy_id,
                   enrollment_type=row.enrollment_type, api_config=ApiConfig.model_validate(row.api_config),
                   defaults=ProfileDefaults.model_validate(row.defaults), created_at=row.created_at,
                   updated_at=row.updated_at)


class ProfileList(CamelModel):
    items: list[ProfileView]


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
