"""The HTTP models of the certificate policy and profile routes: create and PATCH bodies, read models.

The policy rules themselves are ``shared.policy.rules.PolicyRules``; the bodies extend them with the
fields a stored policy or profile has around its rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, ValidationError

from shared.camel import CamelModel
from shared.db.policies import PolicyRow, ProfileRow
from shared.errors import BadRequest, FieldError
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
