"""The HTTP models of issuance: the request body, its fingerprint for idempotency, and the read models.

What a body asks for is validated and written by the registration authority (``shared.registration``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from shared.camel import CamelModel
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import BadRequest, FieldError
from shared.pki.csr import MAX_CSR_BYTES
from shared.policy.attributes import IssueAttributes
from shared.registration import stored_attributes

MAX_WAIT_SECONDS = 30
IDEMPOTENCY_KEY_MAX = 255


class IssueBody(CamelModel):
    profile_id: UUID
    # A PEM CSR; its size is checked (with a clear message) by shared.pki.csr.read_csr.
    csr: str | None = Field(default=None, max_length=MAX_CSR_BYTES * 64)
    attributes: IssueAttributes | None = None
    remove_roots_from_chain: bool = False

    def stored_attributes(self) -> dict[str, Any] | None:
        """The attributes as the registration authority stores them with the request."""
        return stored_attributes(self.attributes)


def request_fingerprint(body: CamelModel) -> bytes:
    """What makes two requests (or batches) "the same body" for an Idempotency-Key: the validated content,
    not bytes."""
    canonical = json.dumps(body.model_dump(mode="json", by_alias=True, exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1-255 printable characters",
                         [FieldError("Idempotency-Key", "invalid header value")])
    return key


class CertificateRequestView(CamelModel):
    """One shape for every answer about a request: POST (202 or 201) and GET alike."""

    certificate_request_id: UUID
    status: str
    certificate: str | None = None
    certificate_chain: str | None = None
    issuing_ca_certificate: str | None = None
    serial_number: str | None = None
    certificate_id: UUID | None = None
    private_key: str | None = None
    error_message: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, request: RequestRow, cert: CertificateRow | None, private_key: str | None = None
           ) -> CertificateRequestView:
        view = cls(certificate_request_id=request.id, status=request.status, error_message=request.error_message,
                   created_at=request.created_at, updated_at=request.updated_at)
        if request.status == "issued":
            # Known from the request row alone: the list (which loads no certificates) still links to it.
            view.certificate_id = request.certificate_id
        if cert is not None and request.status == "issued":
            view.certificate = cert.certificate_pem
            view.certificate_chain = cert.chain_pem
            view.issuing_ca_certificate = cert.issuing_ca_pem
            view.serial_number = cert.serial_number
            view.certificate_id = cert.id
            view.private_key = private_key
        return view


class CertificateRequestList(CamelModel):
    items: list[CertificateRequestView]
    next_cursor: str | None


class CertificateView(CamelModel):
    id: UUID
    project_id: UUID
    profile_id: UUID
    certificate_request_id: UUID
    ca_id: UUID | None
    serial_number: str
    common_name: str | None
    key_algorithm: str
    not_before: datetime
    not_after: datetime
    has_private_key: bool
    renewed_from_id: UUID | None
    renewed_by_id: UUID | None
    created_at: datetime

    @classmethod
    def of(cls, cert: CertificateRow) -> CertificateView:
        return cls(id=cert.id, project_id=cert.project_id, profile_id=cert.profile_id,
                   certificate_request_id=cert.request_id, ca_id=cert.ca_id, serial_number=cert.serial_number,
                   common_name=cert.common_name, key_algorithm=cert.key_algorithm, not_before=cert.not_before,
                   not_after=cert.not_after, has_private_key=cert.encrypted_private_key is not None,
                   renewed_from_id=cert.renewed_from_id, renewed_by_id=cert.renewed_by_id,
                   created_at=cert.created_at)


class CertificateBody(CamelModel):
    certificate: str
    certificate_chain: str
    issuing_ca_certificate: str | None
    serial_number: str
    private_key: str | None = None


class PrivateKeyBody(CamelModel):
    private_key: str


def encode_cursor(row: RequestRow) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, ident = raw.split("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is not None:
            created_at.astimezone(UTC)  # an offset pushing it past years 1-9999: the database refuses it
        return created_at, UUID(ident)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise BadRequest("invalid cursor", [FieldError("cursor", "not a cursor this API returned")]) from None
