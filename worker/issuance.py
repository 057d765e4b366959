"""Issuing certificate requests: claim, re-evaluate, sign, store, notify. Exactly once.

Why a request cannot get two certificates: the claim is one guarded UPDATE (pending -> processing with
this worker's claim token), only the token holder can mark the request issued, and
``certificates.request_id`` is unique, all in the one statement that stores the certificate. A duplicate
message finds the request claimed or final and does nothing; a worker that dies mid-task leaves it
processing until its lease ends, and then another worker (via the reconciler) takes it again.

``issue_many`` handles a list of requests (the API's coalesced chunks, batch chunks, the reconciler's
re-sends), claiming them in one statement and signing and storing them in one short transaction;
``issue`` is the same for one request.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shared.db import authorities as ca_db
from shared.db import requests as db
from shared.db import revocation as revocation_db
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import FieldError, KmsError, PolicyViolation
from shared.pki import builder as x509_builder
from shared.pki.keys import DEFAULT_SIGNATURE, PrivateKey, PublicKey, generate_private_key, private_key_to_der
from shared.pki.template import CertificateTemplate
from shared.policy import rules as policy_rules
from shared.policy.attributes import IssueAttributes
from shared.policy.evaluation import evaluate_request
from shared.profiles import IssuingContext, load_issuing_context
from shared.renewal import stamp as renewal_stamp
from worker.ca_keys import CaKeyCache
from worker.issuers import InternalCaIssuer, Issuer, SelfSignedIssuer
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
CERT_TABLE = "certificates"
# The doorbell's chunk (issue_ready) claims at most this many ready requests; a full claim rings again, so
# a backlog is shared by every worker process instead of queueing behind one.
READY_LIMIT = 32
# Failures that say nothing about the request: the database (or the network) will likely work again.
# Claims are given back at once, and the task retries; anything else the request got wrong ends it failed.
TRANSIENT_DB: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError, asyncpg.SerializationError, asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError, asyncpg.InternalClientError, asyncpg.LockNotAvailableError)


@dataclass(frozen=True)
class Planned:
    """A claimed request with everything decided but the CA's signature: its template, issuer and key."""

    req: RequestRow
    ca_id: UUID | None
    issuer: Issuer
    template: CertificateTemplate
    public_key: PublicKey
    private_key: PrivateKey | None
    cert_id: UUID
    sealed_key: bytes | None
    api_config: dict[str, Any] | None = None


async def issue(rt: Runtime, cache: CaKeyCache, request_id: UUID) -> str:
    """One request: issued, failed, or skipped (claimed elsewhere or already final)."""
    counts = await issue_many(rt, cache, [request_id])
    return next((outcome for outcome in ("issued", "failed") if counts[outcome]), "skipped")


async def issue_many(rt: Runtime, cache: CaKeyCache, request_ids: list[UUID], *, batch_id: UUID | None = None
                     ) -> dict[str, int]:
    """Claim every open request of the list, then in two phases:

    1. outside any transaction, the slow part: re-evaluate each against the profile, policy and CA in
       force now (DESIGN.md 4.6), generate and seal server keys, decrypt the CA key. The claim's lease
       is extended as this goes (a heartbeat), and a request whose claim was taken back is dropped.
    2. one short transaction: lock the requests this claim still holds and share-lock their CAs (only
       active ones sign), then sign and store. Nobody can claim a locked request, nor disable a locked
       CA, until the commit: every signature made here is stored and audited, and none is made for a
       request another worker owns (a lease that ran out during phase 1 cannot cause a second one).
    """
    return await _issue_round(rt, cache, request_ids, batch_id=batch_id, ready_limit=0)


async def issue_ready(rt: Runtime, cache: CaKeyCache, request_ids: list[UUID],
                      ring_again: Callable[[], None]) -> dict[str, int]:
    """The doorbell's chunk: its own requests, and with them up to ``READY_LIMIT`` other ready single
    requests, oldest first. Under load a chunk thus carries what queued up while the workers were busy,
    and one message serves many requests. When the claim comes back full, ``ring_again`` is called before
    the work starts, so another worker process takes the next requests in parallel."""
    return await _issue_round(rt, cache, request_ids, batch_id=None, ready_limit=READY_LIMIT, on_full=ring_again)


async def _issue_round(rt: Runtime, cache: CaKeyCache, request_ids: list[UUID], *, batch_id: UUID | None,
                       ready_limit: int, on_full: Callable[[], None] | None = None) -> dict[str, int]:
    pool = await rt.pool()
    token = uuid.uuid4()
    lease = float(rt.settings.lease_seconds)
    async with pool.acquire() as conn:
        claimed = await db.claim_many(conn, request_ids, token, lease) if request_ids else []
        room = ready_limit - len(claimed)
        extra: list[RequestRow] = []
        try:
            if ready_limit:
                extra = await db.claim_ready(conn, token, lease, room)
                claimed += extra
                if on_full is not None and len(extra) >= room > 0:
                    on_full()
            if not claimed:  # duplicates, or a doorbell whose requests another worker took: nothing to do
                return {"issued": 0, "failed": 0, "skipped": len(set(request_ids))}
            planned, failed = await _plan(rt, cache, conn, claimed, token, lease)
            async with conn.transaction():
                held = await db.lock_claimed(conn, [p.req.id for p in planned], token)
                planned = [p for p in planned if p.req.id in held]
                active = await ca_db.lock_active(conn, list({p.ca_id for p in planned if p.ca_id is not None}))
                done: list[tuple[CertificateRow, UUID, dict[str, Any]]] = []
                for p in planned:
                    if p.ca_id is not None and p.ca_id not in active:
                        failed.append((p.req, "the profile's CA was disabled before this certificate was "
                                              "signed; it signs nothing"))
                        continue
                    try:
                        done.append(_sign(rt, p))
                    except KmsError as exc:
                        failed.append((p.req, str(exc)))
                stored = await db.store_many(conn, done, token=token)
                await db.fail_many(conn, [(r.id, r.project_id, message) for r, message in failed], token=token)
                for notified in {batch_id, *(r.batch_id for r in claimed)} - {None}:
                    await ca_db.notify(conn, f"batch:{notified}")
        except TRANSIENT_DB as exc:
            await _release(conn, [r.id for r in claimed], token, exc)
            raise
    db.chains_committed([row for row, _, _ in done])
    if stored != len(done):  # pragma: no cover - the row locks make this impossible; say so loudly if not
        log.error("signatures made and stored differ", extra={"signed": len(done), "stored": stored})
    outcome = {"issued": stored, "failed": len(failed),
               "skipped": len(set(request_ids)) + len(extra) - stored - len(failed)}
    # The ready requests claimed are named (at most READY_LIMIT): no broker message names them when the
    # fast doorbell (worker.ready_listener) brought them, so this line is where an operator finds them.
    log.info("chunk issued", extra={"batch_id": str(batch_id) if batch_id else None, "signed": len(done),
                                    "stored": stored, "ready": len(extra),
                                    "ready_ids": [str(r.id) for r in extra], **outcome})
    return outcome


async def _plan(rt: Runtime, cache: CaKeyCache, conn: asyncpg.Connection, claimed: list[RequestRow], token: UUID,
                lease: float) -> tuple[list[Planned], list[tuple[RequestRow, str]]]:
    """Phase 1 of ``issue_many``; failures are per request, except transient ones (raised)."""
    contexts: dict[UUID, IssuingContext | KmsError] = {}
    planned: list[Planned] = []
    failed: list[tuple[RequestRow, str]] = []
    held = {r.id for r in claimed}
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + lease / 3
    for req in claimed:
        if loop.time() >= next_beat:
            held = await db.extend_leases(conn, list(held), token, lease)
            next_beat = loop.time() + lease / 3
        if req.id not in held:
            continue  # taken back after our lease ran out: its new owner decides
        try:
            if req.profile_id not in contexts:
                try:
                    contexts[req.profile_id] = await _context(conn, req.profile_id)
                except KmsError as exc:
                    contexts[req.profile_id] = exc
            ctx = contexts[req.profile_id]
            if isinstance(ctx, KmsError):
                raise ctx
            planned.append(await _prepare(rt, cache, conn, req, ctx))
        except KmsError as exc:
            failed.append((req, str(exc)))
        except TRANSIENT_DB:
            raise
        except Exception as exc:
            # One request that breaks the signer must not hold its whole chunk hostage.
            log.exception("signing failed", extra={"certificate_request_id": str(req.id)})
            failed.append((req, f"the request could not be signed ({type(exc).__name__}); "
                                "quote this request id to the operator"))
    if held != {r.id for r in claimed}:
        planned = [p for p in planned if p.req.id in held]
        failed = [(r, m) for r, m in failed if r.id in held]
    return planned, failed


async def _release(conn: asyncpg.Connection, ids: list[UUID], token: UUID, exc: BaseException) -> None:
    """Give claimed requests back after a transient failure, so the retry need not wait for the lease.
    Best effort: on a lost connection, the lease expires and the reconciler takes them again."""
    try:
        if conn.is_closed():
            return
        await db.release(conn, ids, token, f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: S110 - the original error is the one that matters, and it is re-raised
        pass


async def _context(conn: asyncpg.Connection, profile_id: UUID) -> IssuingContext:
    # Validate twice (DESIGN.md 4.6): the current profile, policy and CA, read now, nothing from the queue.
    ctx = await load_issuing_context(conn, profile_id, with_ca_key=True)
    if ctx is None:
        raise PolicyViolation([FieldError("profileId", "the certificate profile no longer exists")])
    return ctx


async def _prepare(rt: Runtime, cache: CaKeyCache, conn: asyncpg.Connection, req: RequestRow,
                   ctx: IssuingContext) -> Planned:
    if req.renewal_of is not None and await revocation_db.is_revoked(conn, req.renewal_of):
        # Validate twice (DESIGN.md 4.6, 7): revoked after the API accepted its renewal, it is not renewed.
        raise PolicyViolation([FieldError("certificateId", "the certificate was revoked; a revoked certificate "
                                                           "is never renewed")])
    attributes = IssueAttributes.model_validate(req.attributes) if req.attributes is not None else None
    # Everything is evaluated again against what is in force now, except the CSR's signature (the proof of
    # possession): the API verified it before storing the request, and the stored bytes cannot change it.
    template = evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes,
                                csr_pem=req.csr_pem, now=datetime.now(UTC), csr_signature_verified=True)
    issuer: Issuer
    issuer_key_algorithm = template.key_algorithm
    if ctx.profile.issuer_type == "ca":
        if ctx.ca is None or ctx.ca_key is None:
            raise PolicyViolation([FieldError("profileId", "the profile's CA has no key yet (still pending?)")])
        ca = await cache.signing_ca(conn, ctx.ca, ctx.ca_key)
        issuer = InternalCaIssuer(ca, rt.settings.public_url)
        issuer_key_algorithm = x509_builder.key_algorithm_of(ca.key)
    else:
        issuer = SelfSignedIssuer()
    signature = template.signature_algorithm or DEFAULT_SIGNATURE[issuer_key_algorithm]
    if not policy_rules.signature_algorithm_allowed(ctx.rules, signature):
        raise PolicyViolation([FieldError("attributes.signatureAlgorithm",
                                          f"the issuer would sign with {signature}, which the policy does not allow")])

    private_key: PrivateKey | None = None
    public_key: PublicKey
    if template.public_key_der is None:
        private_key = generate_private_key(template.key_algorithm)
        public_key = private_key.public_key()
    else:
        # Evaluation accepted only RSA, EC or Ed25519 keys.
        public_key = cast(PublicKey, serialization.load_der_public_key(template.public_key_der))
    cert_id = uuid.uuid4()
    sealed = None
    if private_key is not None:
        sealed = await rt.keyring.seal(conn, req.project_id, private_key_to_der(private_key), table=CERT_TABLE,
                                       row_id=cert_id)
    return Planned(req, ctx.profile.ca_id, issuer, template, public_key, private_key, cert_id, sealed,
                   ctx.profile.api_config if ctx.profile.enrollment_type == "api" else None)


def _sign(rt: Runtime, p: Planned) -> tuple[CertificateRow, UUID, dict[str, Any]]:
    """Phase 2: the CA's signature, and the row that stores it (with its serial's issuer and audit details)."""
    req = p.req
    signed = p.issuer.issue(p.template, p.public_key, p.private_key,
                            backdate=timedelta(seconds=rt.settings.backdate_seconds))
    chain = signed.chain
    if req.remove_roots and chain and chain[-1].issuer == chain[-1].subject:
        chain = chain[:-1]
    serial_hex = format(signed.serial, "x")
    cn = signed.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    not_before, not_after = signed.certificate.not_valid_before_utc, signed.certificate.not_valid_after_utc
    renewal = renewal_stamp(p.api_config, server_key=p.sealed_key is not None, not_before=not_before,
                            not_after=not_after)
    row = CertificateRow(
        id=p.cert_id, project_id=req.project_id, profile_id=req.profile_id, request_id=req.id, ca_id=p.ca_id,
        serial_number=serial_hex, common_name=str(cn[0].value) if cn else None,
        key_algorithm=p.template.key_algorithm,
        certificate_pem=x509_builder.to_pem(signed.certificate), chain_pem=x509_builder.chain_pem(chain),
        issuing_ca_pem=x509_builder.to_pem(signed.chain[0]) if signed.chain else None,
        not_before=not_before, not_after=not_after,
        encrypted_private_key=p.sealed_key, renewed_from_id=req.renewal_of, renewed_by_id=None,
        created_at=datetime.now(UTC), auto_renew=renewal.auto_renew, renew_before_days=renewal.renew_before_days,
        renewal_due_at=renewal.renewal_due_at)
    return row, p.ca_id or p.cert_id, {"serial": serial_hex, "request": str(req.id),
                                       "issuer": str(p.ca_id) if p.ca_id else "self-signed"}
