"""The HTTP models of bulk batches: the body, per-item evaluation, and the read models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import Field, ValidationError

from api.certificates.schemas import IssueBody
from shared.camel import CamelModel
from shared.db.batches import BatchRow, Counts, NewItem
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import BadRequest, FieldError, KmsError
from shared.pki.csr import MAX_CSR_BYTES
from shared.policy.attributes import IssueAttributes
from shared.policy.evaluation import evaluate_request
from shared.profiles import IssuingContext

MAX_BATCH_ITEMS = 10_000
CHUNK_SIZE = 100


class BatchBody(CamelModel):
    profile_id: UUID
    # Items are JSON objects; each is validated on its own (``BatchItem``) so one malformed item fails
    # alone, as a failed item with its reasons, and the rest of the batch proceeds.
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS,
                                        description="each {csr? | attributes?, profileId?} (see BatchItem)")


class BatchItem(CamelModel):
    # Bounded here, not only when parsed: an item that fails is stored with its reason, and an oversized
    # CSR must never be stored at all (nor reach the fingerprint or the COPY).
    csr: str | None = Field(default=None, max_length=MAX_CSR_BYTES)
    attributes: IssueAttributes | None = None
    profile_id: UUID | None = None


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
        view = cls(index=req.batch_index, certificate_request_id=req.id, status=req.status,
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


def evaluate_items(body: BatchBody, contexts: dict[UUID, IssuingContext],
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[NewItem]:
    """Evaluate every item (pure, CPU-bound: the caller runs it off the event loop). An invalid item
    becomes a failed item whose message lists all its violations."""
    return evaluate_slice(body.profile_id, body.items, 0, contexts, now)


def evaluate_slice(default_profile_id: UUID, raw_items: list[dict[str, Any]], offset: int,
                   contexts: dict[UUID, IssuingContext],
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[NewItem]:
    """``evaluate_items`` for the items of one slice, the first at index ``offset`` (a module-level
    function of picklable arguments, so slices of a large batch can be evaluated in other processes)."""
    out = []
    for index, raw in enumerate(raw_items, start=offset):
        try:
            item = BatchItem.model_validate(raw)
        except ValidationError as exc:
            out.append(NewItem(index, default_profile_id, None, None, f"invalid item: {_validation_message(exc)}"))
            continue
        profile_id = item.profile_id or default_profile_id
        ctx = contexts[profile_id]
        stored = IssueBody(profile_id=profile_id, csr=item.csr, attributes=item.attributes).stored_attributes()
        message = None
        try:
            if ctx.profile.issuer_type == "ca" and ctx.ca_status != "active":
                raise BadRequest(f"the profile's CA is {ctx.ca_status}; it signs nothing")
            evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=item.attributes, csr_pem=item.csr,
                             now=now())
        except KmsError as exc:
            message = _message(exc.detail, exc.errors)
        out.append(NewItem(index, profile_id, item.csr, stored, message))
    return out


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "string_too_long" and where == "csr":
            parts.append(f"csr: CSR is larger than {MAX_CSR_BYTES} bytes (16 KiB); it was not stored")
        else:
            parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _message(detail: str, errors: list[FieldError]) -> str:
    if not errors:
        return detail
    listed = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return listed if listed in detail else f"{detail}: {listed}"


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
