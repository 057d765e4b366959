"""The HTTP models of ``/api/v1/cert-manager/ca/internal``: the create and update bodies and the read models.

A body is checked for shape here (pydantic); what needs the database or the parent CA is checked by
``shared.authorities.record_ca``, which takes the plain ``NewCa`` a body turns into.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from shared.authorities import MAX_CA_PATH_LENGTH, SUBJECT_KEYS, NewCa
from shared.camel import CamelModel
from shared.db.authorities import Authority
from shared.pki.template import SubjectName
from shared.policy.attributes import Country, KeyAlgorithmName, Text64, Text128, Ttl, UtcDatetime


class CreateCaBody(CamelModel):
    project_id: UUID
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    type: Literal["root", "intermediate"]
    parent_ca_id: UUID | None = None
    common_name: Text64
    organization: Text64 | None = None
    organizational_unit: Text64 | None = None
    country: Country | None = None
    state: Text128 | None = None
    locality: Text128 | None = None
    key_algorithm: KeyAlgorithmName
    max_path_length: int | None = Field(default=None, ge=0, le=MAX_CA_PATH_LENGTH)
    ttl: Ttl | None = None
    not_after: UtcDatetime | None = None

    @model_validator(mode="after")
    def _shape(self) -> CreateCaBody:
        if (self.ttl is None) == (self.not_after is None):
            raise ValueError("give exactly one of ttl or notAfter")
        if self.type == "root" and self.parent_ca_id is not None:
            raise ValueError("a root CA has no parentCaId")
        if self.type == "intermediate" and self.parent_ca_id is None:
            raise ValueError("an intermediate CA needs parentCaId")
        return self

    def subject(self) -> SubjectName:
        return SubjectName(
            common_name=self.common_name, organization=self.organization,
            organizational_unit=self.organizational_unit, country=self.country, state=self.state,
            locality=self.locality,
        )

    def new_ca(self) -> NewCa:
        """The CA this body asks for, as ``shared.authorities.record_ca`` takes it."""
        return NewCa(project_id=self.project_id, name=self.name, type=self.type, parent_ca_id=self.parent_ca_id,
                     subject=self.subject(), key_algorithm=self.key_algorithm,
                     max_path_length=self.max_path_length, ttl=self.ttl, not_after=self.not_after)


class UpdateCaBody(CamelModel):
    status: Literal["active", "disabled"]


class CaView(CamelModel):
    id: UUID
    project_id: UUID
    name: str
    type: str
    parent_ca_id: UUID | None
    status: str
    common_name: str | None
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    state: str | None = None
    locality: str | None = None
    key_algorithm: str
    max_path_length: int | None
    serial_number: str | None
    not_before: datetime | None
    not_after: datetime | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, ca: Authority) -> CaView:
        return cls(
            id=ca.id, project_id=ca.project_id, name=ca.name, type=ca.type, parent_ca_id=ca.parent_ca_id,
            status=ca.status, key_algorithm=ca.key_algorithm, max_path_length=ca.max_path_length,
            serial_number=ca.serial_number, not_before=ca.not_before, not_after=ca.not_after,
            error_message=ca.error_message, created_at=ca.created_at, updated_at=ca.updated_at,
            **{k: ca.subject.get(k) for k in SUBJECT_KEYS},
        )


class CaList(CamelModel):
    items: list[CaView]


class CaCertificate(CamelModel):
    certificate: str
    certificate_chain: str
    serial_number: str
