"""Issuing one certificate request: claim, re-evaluate, sign, store, notify. Exactly once.

Why it cannot issue twice: the claim is one guarded UPDATE (pending -> processing with this worker's
claim token), only the token holder can mark the request issued, and ``certificates.request_id`` is
unique, all inside the one transaction that stores the certificate. A duplicate message finds the request
claimed or final and does nothing; a worker that dies mid-task leaves it processing until its lease ends,
and then another worker (via the reconciler) takes it again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shared import policy as policy_rules
from shared import x509_builder
from shared.db import audit
from shared.db import authorities as ca_db
from shared.db import requests as db
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import FieldError, KmsError, PolicyViolation
from shared.evaluation import IssueAttributes, evaluate_request
from shared.keys import DEFAULT_SIGNATURE, PrivateKey, PublicKey, generate_private_key, private_key_to_der
from shared.profiles import load_issuing_context
from worker.ca_keys import CaKeyCache
from worker.issuers import InternalCaIssuer, Issuer, SelfSignedIssuer, Signed
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
CERT_TABLE = "certificates"


async def issue(rt: Runtime, cache: CaKeyCache, request_id: UUID) -> str:
    """Returns the outcome: issued, failed, or skipped (claimed elsewhere or already final)."""
    pool = await rt.pool()
    token = uuid.uuid4()
    async with pool.acquire() as conn:
        req = await db.claim(conn, request_id, token, rt.settings.lease_seconds)
        if req is None:
            return "skipped"
        try:
            outcome = await _sign_and_store(rt, cache, conn, req, token)
        except _LostClaim:
            return "skipped"
        except KmsError as exc:
            await _fail(conn, req, token, str(exc))
            return "failed"
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            # Transient: give the request back; Celery's retry (or the reconciler) tries again.
            if not conn.is_closed():
                await db.release(conn, req.id, token, f"{type(exc).__name__}: {exc}")
            raise
    return outcome


async def _fail(conn: asyncpg.Connection, req: RequestRow, token: UUID | None, message: str) -> None:
    async with conn.transaction():
        if await db.finish_failed(conn, req.id, token, message):
            await audit.record(conn, project_id=req.project_id, actor="worker", action="certificate.sign.refused",
                               subject_type="certificate_request", subject_id=str(req.id),
                               details={"error": message})
            await ca_db.notify(conn, f"req:{req.id}")
    log.info("request failed", extra={"certificate_request_id": str(req.id), "error": message})


async def _sign_and_store(rt: Runtime, cache: CaKeyCache, conn: asyncpg.Connection, req: RequestRow,
                          token: UUID) -> str:
    # Validate twice (DESIGN.md 4.6): the current profile and policy, the stored input, nothing from the queue.
    ctx = await load_issuing_context(conn, req.profile_id, with_ca_key=True)
    if ctx is None:
        raise PolicyViolation([FieldError("profileId", "the certificate profile no longer exists")])
    attributes = IssueAttributes.model_validate(req.attributes) if req.attributes is not None else None
    template = evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes,
                                csr_pem=req.csr_pem, now=datetime.now(UTC))

    issuer: Issuer
    issuer_key_algorithm = template.key_algorithm
    if ctx.profile.issuer_type == "ca":
        if ctx.ca is None or ctx.ca_key is None:
            raise PolicyViolation([FieldError("profileId", "the profile's CA has no key yet (still pending?)")])
        ca = await cache.signing_ca(conn, rt.keyring, ctx.ca, ctx.ca_key)
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
    signed = issuer.issue(template, public_key, private_key,
                          backdate=timedelta(seconds=rt.settings.backdate_seconds))
    return await _store(rt, conn, req, token, signed, private_key, template.key_algorithm,
                        ctx.profile.ca_id)


async def _store(rt: Runtime, conn: asyncpg.Connection, req: RequestRow, token: UUID, signed: Signed,
                 private_key: PrivateKey | None, key_algorithm: str, ca_id: UUID | None) -> str:
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
    row = CertificateRow(
        id=cert_id, project_id=req.project_id, profile_id=req.profile_id, request_id=req.id, ca_id=ca_id,
        serial_number=serial_hex, common_name=str(cn[0].value) if cn else None, key_algorithm=key_algorithm,
        certificate_pem=x509_builder.to_pem(signed.certificate), chain_pem=x509_builder.chain_pem(chain),
        issuing_ca_pem=x509_builder.to_pem(signed.chain[0]) if signed.chain else None,
        not_before=signed.certificate.not_valid_before_utc, not_after=signed.certificate.not_valid_after_utc,
        encrypted_private_key=sealed, renewed_from_id=req.renewal_of, renewed_by_id=None,
        created_at=datetime.now(UTC))
    # One statement: issued state, serial, certificate, renewal link, audit event (DESIGN.md 4.5), NOTIFY.
    stored = await db.store_issued(conn, row, token=token, serial_issuer=ca_id or cert_id,
                                   audit_details={"serial": serial_hex, "request": str(req.id),
                                                  "issuer": str(ca_id) if ca_id else "self-signed"})
    if not stored:
        # Our lease ran out and another worker took the request: it decides, we store nothing.
        raise _LostClaim()
    log.info("certificate issued", extra={"certificate_request_id": str(req.id), "serial": serial_hex})
    return "issued"


class _LostClaim(Exception):
    pass
