"""The HTTP models of bulk batches: the body, the read models, and the item cursors.

The items of a body are raw JSON objects: the registration authority (``shared.registration``)
validates and evaluates each on its own (``BatchItem``), so one malformed item fails alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from api.certificates.schemas import wire_status
from shared.camel import CamelModel
from shared.db.batches import BatchRow, Counts
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import BadRequest, FieldError

MAX_BATCH_ITEMS = 10_000


class BatchBody(CamelModel):
    profile_id: UUID
    # Items are JSON objects; each is validated on its own (``shared.registration.BatchItem``) so one
    # malformed item fails alone, as a failed item with its reasons, and the rest of the batch proceeds.
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS,
                                        description="each {csr? | attributes?, profileId?} (see BatchItem)")


class BatchCreated(CamelModel):
    batch_id: UUID
    total: int
    failed_at_submission: int


class BatchView(CamelModel):
    batch_id: UUID
    profile_id: UUID
    status: str
    total: int
    issued: int
    failed: int
    pending: int
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, batch: BatchRow, counts: Counts) -> BatchView:
        final = counts.issued + counts.failed
        status = "completed" if counts.pending == 0 else ("running" if final else "pending")
        return cls(batch_id=batch.id, profile_id=batch.profile_id, status=status, total=batch.total,
                   issued=counts.issued, failed=counts.failed, pending=counts.pending, created_at=batch.created_at,
                   completed_at=counts.last_update if status == "completed" else None)


class BatchItemView(CamelModel):
    index: int
    certificate_request_id: UUID
    status: str
    certificate_id: UUID | None = None
    serial_number: str | None = None
    certificate: str | None = None
    certificate_chain: str | None = None
    private_key: str | None = None
    error_message: str | None = None

    @classmethod
    def of(cls, req: RequestRow, cert: CertificateRow | None, private_key: str | None) -> BatchItemView:
        assert req.batch_index is not None
        view = cls(index=req.batch_index, certificate_request_id=req.id, status=wire_status(req.status),
                   error_message=req.error_message)
        if cert is not None and req.status == "issued":
            view.certificate_id = cert.id
            view.serial_number = cert.serial_number
            view.certificate = cert.certificate_pem
            view.certificate_chain = cert.chain_pem
            view.private_key = private_key
        return view


class BatchItemPage(CamelModel):
    items: list[BatchItemView]
    next_cursor: str | None


def profile_ids(body: BatchBody) -> set[UUID]:
    """Every profile a batch names (the batch's and the items'), so all can be checked before anything."""
    ids = {body.profile_id}
    for raw in body.items:
        value = raw.get("profileId")
        if isinstance(value, str):
            try:
                ids.add(UUID(value))
            except ValueError:
                pass  # reported on the item
    return ids


def encode_item_cursor(index: int) -> str:
    return f"i{index}"


def decode_item_cursor(cursor: str | None) -> int:
    if cursor is None:
        return -1
    digits = cursor[1:]
    # ASCII digits only (str.isdigit also accepts "²" and "٣"), and never past the last possible index:
    # a longer number would overflow the integer column the query compares it with.
    if not cursor.startswith("i") or not (digits.isascii() and digits.isdigit()) or len(digits) > 5 \
            or int(digits) >= MAX_BATCH_ITEMS:
        raise BadRequest("invalid cursor", [FieldError("cursor", "not a cursor this API returned")])
    return int(digits)
