"""The registration authority (Boulder's RA): whether a request may go to the CA, decided in one place.

Every front door turns "a caller wants this from this profile" into a validated request row here, and
nothing else writes certificate requests: the issue and renew endpoints and bulk batches today, ACME
finalize and the worker's server-driven renewal later. So this module imports neither ``api`` nor
``worker``. The caller has found the profile (an ``IssuingContext``) and checked that its caller may use
it; the RA guarantees the rest:

- **The issuer can sign.** A profile whose CA is not active is refused (a disabled CA signs nothing).
- **Validated now, for a fast and complete 4xx.** The request is evaluated against the profile's policy
  and defaults (``shared.policy.evaluation.evaluate_request``) before anything is written; a refusal
  lists every violation at once, and writes nothing.
- **Stored as validated, evaluated again.** The row holds exactly the input that was evaluated
  (``stored_attributes``). The worker evaluates that stored input again, against the policy and CA of
  the moment, before it signs (DESIGN.md 4.6): what the RA accepted is never a promise to sign, and a
  policy tightened in between is still enforced.
- **Idempotency.** A request (or batch) given an idempotency key is answered with the row that key
  was first used for, found *before* any evaluation: the policy or the CA may have changed since, and
  a retry must not be refused for what was accepted (or already issued). The same key with another
  request fingerprint is a 409. Of two concurrent first uses, the database's unique constraint keeps
  one; the other is answered with it. Only a row this call wrote (``created``) is handed to the worker.
- **Batches fail item by item.** Each item is validated on its own; an invalid one becomes a failed
  item whose message lists all its reasons, and the rest of the batch proceeds. The CPU-bound part,
  ``evaluate_slice``, is a module-level function of picklable arguments, so the API can spread a large
  batch over processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import Field, ValidationError

from shared.camel import CamelModel
from shared.db import Executor
from shared.db import batches as batches_db
from shared.db import requests as requests_db
from shared.db.batches import BatchRow, NewItem
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import Conflict, FieldError, KmsError, PolicyViolation
from shared.pki.csr import MAX_CSR_BYTES
from shared.policy.attributes import IssueAttributes
from shared.policy.evaluation import evaluate_request
from shared.profiles import IssuingContext


def _now() -> datetime:
    return datetime.now(UTC)


# -- the checks every request passes ----------------------------------------------------------------

def issuer_inactive(ctx: IssuingContext) -> str | None:
    """Why the profile's issuer cannot sign now, or None when it can."""
    if ctx.profile.issuer_type == "ca" and ctx.ca_status != "active":
        return f"the profile's CA is {ctx.ca_status}; it signs nothing"
    return None


def issuer_kind(ctx: IssuingContext) -> str:
    """Which path issues the profile's requests: 'external' when its CA is an external (ACME) CA, whose
    certificates a worker obtains upstream (worker.external, kms.external), else 'internal'. Stored with
    the request, so the internal claims never take an external request (DESIGN.md invariant 10)."""
    if ctx.profile.issuer_type == "ca" and ctx.ca is not None and ctx.ca.type == "acme":
        return "external"
    return "internal"


def check_issuer_active(ctx: IssuingContext) -> None:
    reason = issuer_inactive(ctx)
    if reason is not None:
        raise PolicyViolation([FieldError("profileId", reason)])


def stored_attributes(attributes: IssueAttributes | None) -> dict[str, Any] | None:
    """The attributes as they are stored with a request: what the caller gave, nothing filled in (the
    worker applies the profile's defaults of its moment when it evaluates them again)."""
    if attributes is None:
        return None
    return attributes.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _repeated_with(existing: RequestRow | BatchRow, request_hash: bytes | None, what: str) -> None:
    if existing.request_hash != request_hash:
        raise Conflict(f"this Idempotency-Key was used with a different {what}",
                       [FieldError("Idempotency-Key", "already used with another body")])


# -- single requests --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Registered:
    """The request row a registration answers with; ``created`` when this call wrote it (then, and only
    then, the caller hands it to the worker)."""

    request: RequestRow
    created: bool


async def repeated_request(conn: Executor, project_id: UUID, idempotency_key: str, request_hash: bytes | None
                           ) -> RequestRow | None:
    """The request ``idempotency_key`` was first used for in the project (409 if with another
    fingerprint), or None when it is new."""
    existing = await requests_db.request_by_idempotency_key(conn, project_id, idempotency_key)
    if existing is not None:
        _repeated_with(existing, request_hash, "request body")
    return existing


async def register_request(conn: Executor, ctx: IssuingContext, *, csr_pem: str | None,
                           attributes: IssueAttributes | None, remove_roots: bool, requested_by: UUID | None,
                           idempotency_key: str | None = None, request_hash: bytes | None = None,
                           renewal_of: UUID | None = None) -> Registered:
    """A new pending request for ``ctx``'s profile from a CSR (or, without one, for a key the server
    makes), validated first; or, for a repeated idempotency key, the request it repeats. ``renewal_of``
    links it to the certificate it renews (ACME's re-order of the same names); the worker then refuses
    it if that certificate was revoked in between, and links both ways when it signs."""
    project_id = ctx.profile.project_id
    if idempotency_key is not None:
        existing = await repeated_request(conn, project_id, idempotency_key, request_hash)
        if existing is not None:
            return Registered(existing, created=False)
    check_issuer_active(ctx)
    evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes, csr_pem=csr_pem, now=_now())
    row = await requests_db.insert_request(
        conn, project_id=project_id, profile_id=ctx.profile.id, csr_pem=csr_pem,
        attributes=stored_attributes(attributes), server_key=csr_pem is None, remove_roots=remove_roots,
        requested_by=requested_by, idempotency_key=idempotency_key, request_hash=request_hash,
        renewal_of=renewal_of, issuer_kind=issuer_kind(ctx))
    if row is not None:
        return Registered(row, created=True)
    # A concurrent request with the same key inserted first: answer with it.
    assert idempotency_key is not None
    existing = await repeated_request(conn, project_id, idempotency_key, request_hash)
    if existing is None:  # pragma: no cover - the conflicting row cannot vanish
        raise Conflict("idempotency key conflict; retry")
    return Registered(existing, created=False)


# -- renewal ----------------------------------------------------------------------------------------

def check_renewable(original: RequestRow, certificate: CertificateRow) -> None:
    """Only a certificate whose key the server made is renewed from its request (a CSR's key is the
    caller's: a renewal of it is a new CSR)."""
    if not original.server_key or certificate.encrypted_private_key is None:
        raise PolicyViolation([FieldError("certificateId", "only certificates whose key the server generated can be "
                                                           "renewed here; submit a new CSR to the issue endpoint")])
    if certificate.revoked_at is not None:
        # DESIGN.md 7: a revoked certificate is never renewed, automatically or by hand.
        raise PolicyViolation([FieldError("certificateId", "the certificate is revoked; a revoked certificate "
                                                           "cannot be renewed: request a new one")])


def renewal_attributes(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The original request's attributes for its renewal, with an absolute validity window (notBefore +
    notAfter) turned into its length: kept as is, the renewal would expire with the certificate it
    replaces, and could not be issued at all once that window has passed."""
    if not stored or stored.get("notAfter") is None:
        return stored
    original = IssueAttributes.model_validate(stored)
    assert original.not_before is not None and original.not_after is not None
    renewed = {k: v for k, v in stored.items() if k not in ("notBefore", "notAfter")}
    renewed["ttl"] = f"{int((original.not_after - original.not_before).total_seconds())}s"
    return renewed


async def register_renewal(conn: asyncpg.Connection, ctx: IssuingContext, *, original: RequestRow,
                           certificate: CertificateRow, requested_by: UUID | None,
                           remove_roots: bool | None = None) -> Registered:
    """A new pending request renewing ``certificate`` (made from ``original``, with ``ctx`` its
    profile): the same profile, names and chain choice (unless ``remove_roots`` says otherwise), a new
    key, evaluated as any request is.

    One renewal of a certificate at a time (DESIGN.md 7, at most once): under the certificate's row lock,
    a renewal still under way (the scan's, or another asked by hand a moment ago) is the answer
    (``created`` False), and a new one is marked on the certificate in the transaction that writes it, so
    the scan, which skips locked and marked certificates, never registers a second. Once that renewal has
    ended, renewing again makes another successor."""
    assert ctx.profile.id == certificate.profile_id
    check_renewable(original, certificate)
    check_issuer_active(ctx)
    stored = renewal_attributes(original.attributes)
    evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=IssueAttributes.model_validate(stored or {}),
                     csr_pem=None, now=_now())
    async with conn.transaction():
        under_way = await requests_db.lock_renewal_under_way(conn, certificate.id)
        if under_way is not None:
            return Registered(under_way, created=False)
        row = await requests_db.insert_request(
            conn, project_id=certificate.project_id, profile_id=certificate.profile_id, csr_pem=None,
            attributes=stored, server_key=True,
            remove_roots=original.remove_roots if remove_roots is None else remove_roots, requested_by=requested_by,
            renewal_of=certificate.id, issuer_kind=issuer_kind(ctx))
        assert row is not None  # no idempotency key: nothing to conflict with
        await requests_db.mark_renewal(conn, certificate.id, row.id)
    return Registered(row, created=True)


async def register_scheduled_renewals(conn: Executor, due: list[CertificateRow],
                                      contexts: dict[UUID, IssuingContext | None], actor: str = "renewer"
                                      ) -> tuple[list[UUID], list[tuple[UUID, str]]]:
    """The server-driven renewal of certificates the scan found due (DESIGN.md 7), in the scan's
    transaction: each validated as ``register_renewal`` validates one, the valid ones written in one
    statement that also marks each certificate as being renewed and audits it; a refused one has its
    reason recorded as the certificate's renewal error (the scan does not try it again). ``contexts``
    holds the profile of each (None when it was deleted). Returns (new request ids, refusals)."""
    originals = await requests_db.get_requests(conn, [c.request_id for c in due])
    renewals: list[requests_db.NewRenewal] = []
    refused: list[tuple[UUID, str]] = []
    for cert in due:
        ctx = contexts.get(cert.profile_id)
        original = originals.get(cert.request_id)
        try:
            if ctx is None or original is None:
                raise PolicyViolation([FieldError("profileId", "the certificate profile no longer exists")])
            check_renewable(original, cert)
            check_issuer_active(ctx)
            stored = renewal_attributes(original.attributes)
            evaluate_request(rules=ctx.rules, defaults=ctx.defaults,
                             attributes=IssueAttributes.model_validate(stored or {}), csr_pem=None, now=_now())
        except KmsError as exc:
            refused.append((cert.id, _message(exc.detail, exc.errors)))
            continue
        renewals.append(requests_db.NewRenewal(cert.id, cert.project_id, cert.profile_id, stored,
                                               original.remove_roots, issuer_kind(ctx)))
    ids = await requests_db.insert_renewals(conn, renewals, actor)
    await requests_db.record_renewal_errors(conn, refused, actor)
    return ids, refused


# -- batches ----------------------------------------------------------------------------------------

class BatchItem(CamelModel):
    """One item of a batch as the RA takes it: validated on its own, from the raw JSON object."""

    # Bounded here, not only when parsed: an item that fails is stored with its reason, and an oversized
    # CSR must never be stored at all (nor reach the fingerprint or the COPY).
    csr: str | None = Field(default=None, max_length=MAX_CSR_BYTES)
    attributes: IssueAttributes | None = None
    profile_id: UUID | None = None


def evaluate_batch_items(default_profile_id: UUID, raw_items: list[dict[str, Any]],
                         contexts: dict[UUID, IssuingContext],
                         now: Callable[[], datetime] = _now) -> list[NewItem]:
    """Evaluate every item (pure, CPU-bound: the caller runs it off the event loop). An invalid item
    becomes a failed item whose message lists all its violations. ``contexts`` holds every profile the
    batch names (the caller has checked they are the caller's)."""
    return evaluate_slice(default_profile_id, raw_items, 0, contexts, now)


def evaluate_slice(default_profile_id: UUID, raw_items: list[dict[str, Any]], offset: int,
                   contexts: dict[UUID, IssuingContext],
                   now: Callable[[], datetime] = _now) -> list[NewItem]:
    """``evaluate_batch_items`` for the items of one slice, the first at index ``offset`` (a module-level
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
        message = issuer_inactive(ctx)
        if message is None and issuer_kind(ctx) == "external":
            # Bulk batches are the internal signers' fast path; an external CA's requests go one by one.
            message = ("profileId: the profile's CA is an external CA, which takes no bulk batches; request each "
                       "certificate on its own")
        if message is None:
            try:
                evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=item.attributes,
                                 csr_pem=item.csr, now=now())
            except KmsError as exc:
                message = _message(exc.detail, exc.errors)
        out.append(NewItem(index, profile_id, item.csr, stored_attributes(item.attributes), message))
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


@dataclass(frozen=True)
class RegisteredBatch:
    """The batch a registration answers with; ``created`` when this call wrote it, with ``pending`` the
    (index, request id) of its items to hand to the worker (empty for a repeated batch)."""

    batch: BatchRow
    pending: list[tuple[int, UUID]]
    created: bool


async def repeated_batch(conn: Executor, project_id: UUID, idempotency_key: str, request_hash: bytes | None
                         ) -> BatchRow | None:
    """The batch ``idempotency_key`` was first used for in the project (409 if with another
    fingerprint), or None when it is new. Asked before the (costly) evaluation."""
    existing = await batches_db.batch_by_idempotency_key(conn, project_id, idempotency_key)
    if existing is not None:
        _repeated_with(existing, request_hash, "batch")
    return existing


async def register_batch(conn: asyncpg.Connection, *, project_id: UUID, profile_id: UUID, requested_by: UUID,
                         items: list[NewItem], idempotency_key: str | None = None, request_hash: bytes | None = None
                         ) -> RegisteredBatch:
    """Write a batch of items from ``evaluate_batch_items`` (or its slices) in one transaction; for an
    idempotency key a concurrent submission used first, the batch it wrote."""
    async with conn.transaction():
        inserted = await batches_db.insert_batch(conn, project_id=project_id, profile_id=profile_id,
                                                 requested_by=requested_by, items=items,
                                                 idempotency_key=idempotency_key, request_hash=request_hash)
    if inserted is not None:
        return RegisteredBatch(inserted[0], inserted[1], created=True)
    assert idempotency_key is not None
    existing = await repeated_batch(conn, project_id, idempotency_key, request_hash)
    if existing is None:  # pragma: no cover - the conflicting row cannot vanish
        raise Conflict("idempotency key conflict; retry")
    return RegisteredBatch(existing, [], created=False)
