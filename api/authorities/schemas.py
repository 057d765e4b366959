"""The HTTP models of ``/api/v1/cert-manager/ca/internal``: the create and update bodies and the read models.

The shapes are upstream's (DESIGN.md 5.3): ``{projectId, name, status, configuration: {type, parentCaId,
commonName, organization, ou, country, province, locality, keyAlgorithm, maxPathLength, notAfter}}`` in,
the CA bare out. A body is checked for shape here (pydantic); what needs the database or the parent CA is
checked by ``shared.authorities.record_ca``, which takes the plain ``NewCa`` a body turns into.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, RootModel, model_validator

from shared.authorities import MAX_CA_PATH_LENGTH, NewCa
from shared.camel import CamelModel
from shared.db.authorities import Authority
from shared.errors import PolicyViolation
from shared.pki.names import subject_name
from shared.pki.template import SubjectName
from shared.policy.attributes import Country, KeyAlgorithmName, Text64, Text128, Ttl, UtcDatetime

# Upstream's CA names are slugs: lowercase letters, digits and single hyphens between them.
CA_NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# The wire status of a CA whose key and certificate the worker has not made yet (DESIGN.md 5.8).
PENDING_ON_THE_WIRE = "pending-certificate"


class CaConfigurationBody(CamelModel):
    type: Literal["root", "intermediate"]
    parent_ca_id: UUID | None = None
    common_name: Text64
    organization: Text64 | None = None
    ou: Text64 | None = None
    country: Country | None = None
    province: Text128 | None = None
    locality: Text128 | None = None
    key_algorithm: KeyAlgorithmName
    # -1 (upstream's "unlimited") and absent both mean no limit of the CA's own; under a parent with a
    # limit, the child gets the deepest length the parent allows (shared.authorities.child_path_length).
    max_path_length: int | None = Field(default=None, ge=-1, le=MAX_CA_PATH_LENGTH)
    not_after: UtcDatetime | None = None
    ttl: Ttl | None = None  # extension: a duration instead of notAfter

    @model_validator(mode="after")
    def _shape(self) -> CaConfigurationBody:
        if (self.ttl is None) == (self.not_after is None):
            raise ValueError("give exactly one of notAfter or ttl")
        if self.type == "root" and self.parent_ca_id is not None:
            raise ValueError("a root CA has no parentCaId")
        if self.type == "intermediate" and self.parent_ca_id is None:
            raise ValueError("an intermediate CA needs parentCaId")
        return self

    def subject(self) -> SubjectName:
        return SubjectName(common_name=self.common_name, organization=self.organization,
                           organizational_unit=self.ou, country=self.country, state=self.province,
                           locality=self.locality)


class CreateCaBody(CamelModel):
    project_id: UUID
    name: str = Field(min_length=1, max_length=100, pattern=CA_NAME_PATTERN)
    status: Literal["active", "disabled"] = "active"
    configuration: CaConfigurationBody

    def new_ca(self) -> NewCa:
        """The CA this body asks for, as ``shared.authorities.record_ca`` takes it."""
        c = self.configuration
        path_length = None if c.max_path_length in (None, -1) else c.max_path_length
        return NewCa(project_id=self.project_id, name=self.name, type=c.type, parent_ca_id=c.parent_ca_id,
                     subject=c.subject(), key_algorithm=c.key_algorithm, max_path_length=path_length,
                     ttl=c.ttl, not_after=c.not_after, status=self.status)


class UpdateCaBody(CamelModel):
    status: Literal["active", "disabled"]


class CaConfigurationView(CamelModel):
    type: str
    parent_ca_id: UUID | None
    common_name: str | None
    organization: str | None
    ou: str | None
    country: str | None
    province: str | None
    locality: str | None
    key_algorithm: str
    max_path_length: int  # -1: no limit
    dn: str
    serial_number: str | None
    not_before: datetime | None
    not_after: datetime | None
    active_ca_cert_id: UUID | None  # the CA has one certificate; its id is the CA's (once it exists)


class CaView(CamelModel):
    id: UUID
    project_id: UUID
    type: Literal["internal"]
    name: str
    status: str  # active | disabled | pending-certificate, and failed (extension, see errorMessage)
    configuration: CaConfigurationView
    error_message: str | None = None  # extension: why the worker could not make a failed CA
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, ca: Authority) -> CaView:
        s = ca.subject
        subject = SubjectName(**{k: s.get(k) for k in SubjectName.__dataclass_fields__})
        try:
            dn = subject_name(subject, field_prefix="").rfc4514_string()
        except PolicyViolation:  # a row written before the subject checks; never refused on read
            dn = ""
        configuration = CaConfigurationView(
            type=ca.type, parent_ca_id=ca.parent_ca_id, common_name=subject.common_name,
            organization=subject.organization, ou=subject.organizational_unit, country=subject.country,
            province=subject.state, locality=subject.locality, key_algorithm=ca.key_algorithm,
            max_path_length=-1 if ca.max_path_length is None else ca.max_path_length, dn=dn,
            serial_number=ca.serial_number, not_before=ca.not_before, not_after=ca.not_after,
            active_ca_cert_id=ca.id if ca.certificate_pem is not None else None,
        )
        return cls(id=ca.id, project_id=ca.project_id, type="internal", name=ca.name, status=wire_status(ca.status),
                   configuration=configuration, error_message=ca.error_message, created_at=ca.created_at,
                   updated_at=ca.updated_at)


def wire_status(status: str) -> str:
    return PENDING_ON_THE_WIRE if status == "pending" else status


class CaList(RootModel[list[CaView]]):
    """A project's CAs: a bare array, as upstream answers it."""

    def to_json(self) -> list[object]:
        out: list[object] = self.model_dump(mode="json", by_alias=True)
        return out


class CaCertificate(CamelModel):
    certificate: str
    certificate_chain: str
    serial_number: str


class CaCertificateVersion(CaCertificate):
    version: int


class CaCertificateVersions(RootModel[list[CaCertificateVersion]]):
    """Every certificate a CA has had, oldest first (a bare array, as upstream); ours have one, version 1."""

    def to_json(self) -> list[object]:
        out: list[object] = self.model_dump(mode="json", by_alias=True)
        return out
