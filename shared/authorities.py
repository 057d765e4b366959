"""Internal CAs: the checks on a requested CA, and recording it (the HTTP models are in ``api.authorities``).

The API records a CA as ``pending``; the worker makes its key and certificate (``worker.authorities``).
Everything that can be checked without the parent's private key is checked here, before any row is
written, so a bad request fails fast and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from shared.db import Executor
from shared.db import authorities as db
from shared.db.authorities import Authority
from shared.errors import BadRequest, Conflict, FieldError, NotFound, PolicyViolation
from shared.pki.names import subject_name
from shared.pki.template import SubjectName
from shared.policy.ttl import parse_ttl

MAX_CA_PATH_LENGTH = 10


@dataclass(frozen=True)
class NewCa:
    """A CA someone asks for, before any check: the front door's body turned into plain values."""

    project_id: UUID
    name: str
    type: str  # "root" or "intermediate"
    parent_ca_id: UUID | None
    subject: SubjectName
    key_algorithm: str
    max_path_length: int | None
    ttl: str | None  # exactly one of ttl and not_after
    not_after: datetime | None
    status: str = "active"  # the status the CA takes once its key and certificate exist: active or disabled


SUBJECT_KEYS = ("common_name", "organization", "organizational_unit", "country", "state", "locality")


# The names upstream's CA configuration gives the subject fields that differ from ours (DESIGN.md 5.3).
WIRE_SUBJECT_KEYS = {"organizationalUnit": "ou", "state": "province"}


def _wire_key(field: str) -> str:
    return WIRE_SUBJECT_KEYS.get(field, field)


def subject_json(subject: SubjectName) -> dict[str, Any]:
    return {k: getattr(subject, k) for k in SUBJECT_KEYS if getattr(subject, k) is not None}


def subject_of(stored: dict[str, Any]) -> SubjectName:
    return SubjectName(**{k: stored.get(k) for k in SUBJECT_KEYS})


def child_path_length(requested: int | None, parent: Authority | None) -> int | None:
    """A child's pathLen must be below its parent's; unset under a limited parent, it is parent - 1."""
    if parent is None or parent.max_path_length is None:
        return requested
    allowed = parent.max_path_length - 1
    if allowed < 0:
        raise PolicyViolation([FieldError(
            "configuration.parentCaId", f"CA {parent.name!r} has maxPathLength 0 and cannot sign intermediate CAs")])
    if requested is None:
        return allowed
    if requested > allowed:
        raise PolicyViolation([FieldError(
            "configuration.maxPathLength", f"must be at most {allowed} under CA {parent.name!r} (its maxPathLength is "
                             f"{parent.max_path_length})")])
    return requested


def check_validity(ttl: str | None, not_after: datetime | None, parent: Authority | None, now: datetime
                   ) -> tuple[int | None, datetime | None]:
    """(ttl_seconds, requested_not_after) from exactly one of ``ttl`` and ``not_after``, refused if it
    would outlive the parent."""
    ttl_seconds = parse_ttl(ttl) if ttl is not None else None
    end = now + timedelta(seconds=ttl_seconds) if ttl_seconds is not None else not_after
    assert end is not None
    field = "configuration.ttl" if ttl_seconds is not None else "configuration.notAfter"
    if end <= now:
        raise PolicyViolation([FieldError(field, "the CA would already be expired")])
    if parent is not None and parent.not_after is not None and end > parent.not_after:
        raise PolicyViolation([FieldError(
            field, f"the CA would end {end.isoformat()} but its parent {parent.name!r} ends "
                   f"{parent.not_after.isoformat()}; a CA cannot outlive its issuer")])
    return ttl_seconds, not_after


async def record_ca(conn: Executor, new: NewCa) -> Authority:
    """Check the request and write the pending CA row. Raises NotFound for another project's parent."""
    subject = new.subject
    try:
        subject_name(subject, field_prefix="")
    except PolicyViolation as exc:
        errors = [FieldError(f"configuration.{_wire_key(e.field)}", e.message) for e in exc.errors]
        raise BadRequest("invalid CA subject", errors) from None
    parent: Authority | None = None
    if new.parent_ca_id is not None:
        parent = await db.get(conn, new.parent_ca_id, new.project_id)
        if parent is None or parent.type == "acme":  # an external CA signs no CA of ours
            raise NotFound("no such parent CA", [FieldError("configuration.parentCaId", "no such CA in this project")])
        if parent.status != "active":
            raise PolicyViolation([FieldError("configuration.parentCaId",
                                              f"parent CA {parent.name!r} is {parent.status}, not active; "
                                              "it cannot sign")])
    path_length = child_path_length(new.max_path_length, parent)
    ttl_seconds, not_after = check_validity(new.ttl, new.not_after, parent, datetime.now(UTC))
    ca = await db.insert(
        conn, project_id=new.project_id, name=new.name, type=new.type, parent_ca_id=new.parent_ca_id,
        subject=subject_json(subject), key_algorithm=new.key_algorithm, max_path_length=path_length,
        ttl_seconds=ttl_seconds, requested_not_after=not_after, status_after_creation=new.status,
    )
    if ca is None:
        raise Conflict(f"a CA named {new.name!r} already exists in this project",
                       [FieldError("name", "already in use")])
    return ca
