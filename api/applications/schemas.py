"""The HTTP models of the application routes (DESIGN.md 5.5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from shared.camel import CamelModel
from shared.db.applications import ApplicationProfile, ApplicationRow

# What the clients put in a URL path (`by-name/{name}`): no slash, no control characters.
AppName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ProfileIds = Annotated[list[UUID], Field(max_length=100)]


class CreateApplicationBody(CamelModel):
    project_id: UUID
    name: AppName
    description: str = Field(default="", max_length=1000)
    profile_ids: ProfileIds = Field(default_factory=list)


class AttachProfilesBody(CamelModel):
    profile_ids: Annotated[list[UUID], Field(min_length=1, max_length=100)]


class ApplicationView(CamelModel):
    id: UUID
    project_id: UUID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ApplicationRow) -> ApplicationView:
        return cls(id=row.id, project_id=row.project_id, name=row.name, description=row.description,
                   created_at=row.created_at, updated_at=row.updated_at)


class ApplicationEnvelope(CamelModel):
    application: ApplicationView


class ApplicationList(CamelModel):
    applications: list[ApplicationView]
    total_count: int


class ApplicationProfileView(CamelModel):
    application_id: UUID
    profile_id: UUID
    profile_slug: str

    @classmethod
    def of(cls, link: ApplicationProfile) -> ApplicationProfileView:
        return cls(application_id=link.application_id, profile_id=link.profile_id, profile_slug=link.profile_slug)


class ApplicationProfiles(CamelModel):
    profiles: list[ApplicationProfileView]
