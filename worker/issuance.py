"""Issuing certificate requests: claim, re-evaluate, sign, store, notify. Exactly once.

Why a request cannot get two certificates: the claim is one guarded UPDATE (pending -> processing with
this worker's claim token), only the token holder can mark the request issued, and
``certificates.request_id`` is unique, all in the one statement that stores the certificate. A duplicate
message finds the request claimed or final and does nothing; a worker that dies mid-task leaves it
processing until its lease ends, and then another worker (via the reconciler) takes it again.

``issue`` handles one request (the single-request path); ``issue_many`` a list of them (batch chunks and
the reconciler), claiming them in one statement and storing them in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shared import policy as policy_rules
from shared import x509_builder
from shared.attributes import IssueAttributes
from shared.db import audit
from shared.db import authorities as ca_db
from shared.db import requests as db
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import FieldError, KmsError, PolicyViolation
from shared.evaluation import evaluate_request
from shared.keys import DEFAULT_SIGNATURE, PrivateKey, PublicKey, generate_private_key, private_key_to_der
from shared.profiles import IssuingContext, load_issuing_context
from worker.ca_keys import CaKeyCache
from worker.issuers import InternalCaIssuer, Issuer, SelfSignedIssuer
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
CERT_TABLE = "certificates"
TRANSIENT_DB = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Prepared:
    """A signed certificate, ready to store."""

    row: CertificateRow
    serial_issuer: UUID
    audit_details: dict[str, Any]


async def issue(rt: Runtime, cache: CaKeyCache, request_id: UUID) -> str:
    """Returns the outcome: issued, failed, or skipped (claimed elsewhere or already final)."""
    pool = await rt.pool()
    token = uuid.uuid4()
    async with pool.acquire() as conn:
        req = await db.claim(conn, request_id, token, rt.settings.lease_seconds)
        if req is None:
            return "skipped"
        try:
            ctx = await _context(conn, req.profile_id)
            prepared = await _prepare(rt, cache, conn, req, ctx)
            stored = await db.store_issued(conn, prepared.row, token=token, serial_issuer=prepared.serial_issuer,
                                           audit_details=prepared.audit_details)
        except KmsError as exc:
            await _fail(conn, req, token, str(exc))
            return "failed"
        except TRANSIENT_DB as exc:
            # Transient: give the request back; Celery's retry (or the reconciler) tries again.
            await _release(conn, [req.id], token, exc)
            raise
    if not stored:
        # Our lease ran out and another worker took the request: it decides, we stored nothing.
        return "skipped"
    log.info("certificate issued", extra={"certificate_request_id": str(request_id),
                                          "serial": prepared.row.serial_number})
    return "issued"


async def issue_many(rt: Runtime, cache: CaKeyCache, request_ids: list[UUID], *, batch_id: UUID | None = None
                     ) -> dict[str, int]:
    """Claim every request of the list that is open, sign each, store them all in one transaction."""
    pool = await rt.pool()
    token = uuid.uuid4()
    async with pool.acquire() as conn:
        claimed = await db.claim_many(conn, request_ids, token, rt.settings.lease_seconds)
        contexts: dict[UUID, IssuingContext | KmsError] = {}
        done: list[Prepared] = []
        failed: list[tuple[RequestRow, str]] = []
        try:
            for req in claimed:
                try:
                    if req.profile_id not in contexts:
                        try:
                            contexts[req.profile_id] = await _context(conn, req.profile_id)
                        except KmsError as exc:
                            contexts[req.profile_id] = exc
                    ctx = contexts[req.profile_id]
                    if isinstance(ctx, KmsError):
                        raise ctx
                    done.append(await _prepare(rt, cache, conn, req, ctx))
                except KmsError as exc:
                    failed.append((req, str(exc)))
                except TRANSIENT_DB:
                    raise
                except Exception as exc:
                    # One request that breaks the signer must not hold its whole chunk hostage.
                    log.exception("signing failed", extra={"certificate_request_id": str(req.id)})
                    failed.append((req, f"the request could not be signed ({type(exc).__name__}); "
                                        "quote this request id to the operator"))
            async with conn.transaction():
                await db.store_many(conn, [(p.row, p.serial_issuer, p.audit_details) for p in done], token=token)
                await db.fail_many(conn, [(r.id, r.project_id, message) for r, message in failed], token=token)
                if batch_id is not None:
                    await ca_db.notify(conn, f"batch:{batch_id}")
        except TRANSIENT_DB as exc:
            await _release(conn, [r.id for r in claimed], token, exc)
            raise
    log.info("chunk issued", extra={"batch_id": str(batch_id) if batch_id else None, "issued": len(done),
                                    "failed": len(failed), "skipped": len(request_ids) - len(claimed)})
    return {"issued": len(done), "failed": len(failed), "skipped": len(request_ids) - len(claimed)}


async def _release(conn: asyncpg.Connection, ids: list[UUID], token: UUID, exc: BaseException) -> None:
    """Give claimed requests back after a transient failure, so the retry need not wait for the lease.
    Best effort: on a lost connection, the lease expires and the reconciler takes them again."""
    try:
        if conn.is_closed():
            return
        await db.release(conn, ids, token, f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: S110 - the original error is the one that matters, and it is re-raised
        pass


async def _fail(conn: asyncpg.Connection, req: RequestRow, token: UUID | None, message: str) -> None:
    async with conn.transaction():
        if await db.finish_failed(conn, req.id, token, message):
            await audit.record(conn, project_id=req.project_id, actor="worker", action="certificate.sign.refused",
                               subject_type="certificate_request", subject_id=str(req.id),
                               details={"error": message})
            await ca_db.notify(conn, f"req:{req.id}")
    log.info("request failed", extra={"certificate_request_id": str(req.id), "error": message})


async def _context(conn: asyncpg.Connection, profile_id: UUID) -> IssuingContext:
    # Validate twice (DESIGN.md 4.6): the current profile, policy and CA, read now, nothing from the queue.
    ctx = await load_issuing_context(conn, profile_id, with_ca_key=True)
    if ctx is None:
        raise PolicyViolation([FieldError("profileId", "the certificate profile no longer exists")])
    return ctx


async def _prepare(rt: Runtime, cache: CaKeyCache, conn: asyncpg.Connection, req: RequestRow,
                   ctx: IssuingContext) -> Prepared:
    attributes = IssueAttributes.model_validate(req.attributes) if req.attributes is not None else None
    template = evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes,
                                csr_pem=req.csr_pem, now=datetime.now(UTC))
    issuer: Issuer
    issuer_key_algorithm = template.key_algorithm
    if ctx.profile.issuer_type == "ca":
        if ctx.ca is None or ctx.ca_key is None:
            raise PolicyViolation([FieldError("profileId", "the profile's CA has no key yet (still pending?)")])
        ca = await cache.signing_ca(conn, ctx.ca, ctx.ca_key)
        issuer = InternalCaIssuer(ca)
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
        loaded = serialization.load_der_public_key(template.public_key_der)
        public_key = loaded  # type: ignore[assignment]  (checked by evaluation: RSA, EC or Ed25519)
    signed = issuer.issue(template, public_key, private_key, backdate=timedelta(seconds=rt.settings.backdate_seconds))

    cert_id = uuid.uuid4()
    chain = signed.chain
    if req.remove_roots and chain and chain[-1].issuer == chain[-1].subject:
        chain = chain[:-1]
    serial_hex = format(signed.serial, "x")
    cn = signed.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    sealed = None
    if private_key is not None:
        sealed = await rt.keyring.seal(conn, req.project_id, private_key_to_der(private_key), table=CERT_TABLE,
                                       row_id=cert_id)
    ca_id = ctx.profile.ca_id
    row = CertificateRow(
        id=cert_id, project_id=req.project_id, profile_id=req.profile_id, request_id=req.id, ca_id=ca_id,
        serial_number=serial_hex, common_name=str(cn[0].value) if cn else None, key_algorithm=template.key_algorithm,
        certificate_pem=x509_builder.to_pem(signed.certificate), chain_pem=x509_builder.chain_pem(chain),
        issuing_ca_pem=x509_builder.to_pem(signed.chain[0]) if signed.chain else None,
        not_before=signed.certificate.not_valid_before_utc, not_after=signed.certificate.not_valid_after_utc,
        encrypted_private_key=sealed, renewed_from_id=req.renewal_of, renewed_by_id=None,
        created_at=datetime.now(UTC))
    return Prepared(row, ca_id or cert_id, {"serial": serial_hex, "request": str(req.id),
                                            "issuer": str(ca_id) if ca_id else "self-signed"})
