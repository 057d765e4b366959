"""Internal CAs as the API sees them: the create request, its checks, and the read model.

The API records a CA as ``pending``; the worker makes its key and certificate (``worker.authorities``).
Everything that can be checked without the parent's private key is checked here, before any row is
written, so a bad request fails fast and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, model_validator

from shared.camel import CamelModel
from shared.db import Executor
from shared.db import authorities as db
from shared.db.authorities import Authority
from shared.errors import BadRequest, Conflict, FieldError, NotFound, PolicyViolation
from shared.pki.names import subject_name
from shared.pki.template import SubjectName
from shared.policy.attributes import Country, KeyAlgorithmName, Text64, Text128, Ttl, UtcDatetime
from shared.policy.ttl import parse_ttl

MAX_CA_PATH_LENGTH = 10


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
            **{k: ca.subject.get(k) for k in _SUBJECT_KEYS},
        )


class CaList(CamelModel):
    items: list[CaView]


class CaCertificate(CamelModel):
    certificate: str
    certificate_chain: str
    serial_number: str


_SUBJECT_KEYS = ("common_name", "organization", "organizational_unit", "country", "state", "locality")


def subject_json(subject: SubjectName) -> dict[str, Any]:
    return {k: getattr(subject, k) for k in _SUBJECT_KEYS if getattr(subject, k) is not None}


def subject_of(stored: dict[str, Any]) -> SubjectName:
    return SubjectName(**{k: stored.get(k) for k in _SUBJECT_KEYS})


def child_path_length(requested: int | None, parent: Authority | None) -> int | None:
    """A child's pathLen must be below its parent's; unset under a limited parent, it is parent - 1."""
    if parent is None or parent.max_path_length is None:
        return requested
    allowed = parent.max_path_length - 1
    if allowed < 0:
        raise PolicyViolation([FieldError(
            "parentCaId", f"CA {parent.name!r} has maxPathLength 0 and cannot sign intermediate CAs")])
    if requested is None:
        return allowed
    if requested > allowed:
        raise PolicyViolation([FieldError(
            "maxPathLength", f"must be at most {allowed} under CA {parent.name!r} (its maxPathLength is "
                             f"{parent.max_path_length})")])
    return requested


def check_validity(body: CreateCaBody, parent: Authority | None, now: datetime) -> tuple[int | None, datetime | None]:
    """(ttl_seconds, requested_not_after), refused if it would outlive the parent."""
    ttl_seconds = parse_ttl(body.ttl) if body.ttl is not None else None
    end = now + timedelta(seconds=ttl_seconds) if ttl_seconds is not None else body.not_after
    assert end is not None
    field = "ttl" if ttl_seconds is not None else "notAfter"
    if end <= now:
        raise PolicyViolation([FieldError(field, "the CA would already be expired")])
    if parent is not None and parent.not_after is not None and end > parent.not_after:
        raise PolicyViolation([FieldError(
            field, f"the CA would end {end.isoformat()} but its parent {parent.name!r} ends "
                   f"{parent.not_after.isoformat()}; a CA cannot outlive its issuer")])
    return ttl_seconds, body.not_after


async def record_ca(conn: Executor, body: CreateCaBody) -> Authority:
    """Check the request and write the pending CA row. Raises NotFound for another project's parent."""
    subject = body.subject()
    try:
        subject_name(subject, field_prefix="")
    except PolicyViolation as exc:
        raise BadRequest("invalid CA subject", exc.errors) from None
    parent: Authority | None = None
    if body.parent_ca_id is not None:
        parent = await db.get(conn, body.parent_ca_id, body.project_id)
        if parent is None:
            raise NotFound("no such parent CA", [FieldError("parentCaId", "no such CA in this project")])
        if parent.status != "active":
            raise PolicyViolation([FieldError("parentCaId", f"parent CA {parent.name!r} is {parent.status}, "
                                                            "not active; it cannot sign")])
    path_length = child_path_length(body.max_path_length, parent)
    ttl_seconds, not_after = check_validity(body, parent, datetime.now(UTC))
    ca = await db.insert(
        conn, project_id=body.project_id, name=body.name, type=body.type, parent_ca_id=body.parent_ca_id,
        subject=subject_json(subject), key_algorithm=body.key_algorithm, max_path_length=path_length,
        ttl_seconds=ttl_seconds, requested_not_after=not_after,
    )
    if ca is None:
        raise Conflict(f"a CA named {body.name!r} already exists in this project",
                       [FieldError("name", "already in use")])
    return ca
