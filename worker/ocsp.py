"""Issuing a CA's delegated OCSP responder certificate, inside a worker (the only holder of CA keys).

The API's OCSP responder signs answers with the responder's key, read from the database and opened
with the project's data key: answers are signed at the moment they are asked for, from the live
revocation state, so a revocation is visible at once and a serial never issued gets a signed
``unknown`` (which pre-signed answers cannot give). The CA key signs only the responder certificate,
which is short-lived (``KMS_OCSP_RESPONDER_VALIDITY_SECONDS``) and re-issued once half its life is
gone, each issuance audited in the transaction that stores it (DESIGN.md invariant 11).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
from cryptography import x509

from shared.config import Settings
from shared.db import authorities as authorities_db
from shared.db import ocsp as db
from shared.pki import builder as x509_builder
from shared.pki.keys import PrivateKey, generate_private_key, private_key_to_der
from shared.secrets.keyring import KeyRing
from worker.ca_keys import CaKeyCache
from worker.revocation import for_each_ca
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")


def responder_key_algorithm(ca_key_algorithm: str) -> str:
    """The responder's key: the CA's curve (or Ed25519), RSA-2048 under any RSA CA (an RSA-4096 answer
    would cost its signer ~15x more and give a relying party nothing the CA's own strength does not)."""
    return "RSA_2048" if ca_key_algorithm.startswith("RSA_") else ca_key_algorithm


def refresh_margin(settings: Settings) -> timedelta:
    """A responder is replaced once less than half its validity remains."""
    return timedelta(seconds=settings.ocsp_responder_validity_seconds / 2)


async def store_new_responder(conn: asyncpg.Connection, settings: Settings, keyring: KeyRing, *, ca_id: UUID,
                              project_id: UUID, certificate: x509.Certificate, key: PrivateKey,
                              key_algorithm: str) -> UUID:
    """Make, sign and store a responder for the CA in the caller's transaction (which holds the CA key)."""
    now = datetime.now(UTC)
    not_before = max(now - timedelta(seconds=settings.backdate_seconds), certificate.not_valid_before_utc)
    not_after = min(now + timedelta(seconds=settings.ocsp_responder_validity_seconds),
                    certificate.not_valid_after_utc)
    responder_key = generate_private_key(responder_key_algorithm(key_algorithm))
    serial = x509_builder.new_serial()
    cert = x509_builder.build_ocsp_responder_certificate(
        public_key=responder_key.public_key(), issuer_cert=certificate, issuer_key=key, serial=serial,
        not_before=not_before, not_after=not_after)
    serial_hex = format(serial, "x")
    await authorities_db.reserve_serial(conn, ca_id, serial_hex)
    responder_id = uuid4()
    sealed = await keyring.seal(conn, project_id, private_key_to_der(responder_key), table=db.TABLE,
                                row_id=responder_id)
    await db.store_responder(conn, responder_id=responder_id, ca_id=ca_id, project_id=project_id,
                             serial_number=serial_hex, not_before=cert.not_valid_before_utc,
                             not_after=cert.not_valid_after_utc, certificate_pem=x509_builder.to_pem(cert),
                             encrypted_private_key=sealed)
    return responder_id


async def issue_responder(rt: Runtime, cache: CaKeyCache, ca_id: UUID) -> str:
    """Issue a responder for the CA unless it has one valid beyond the refresh margin."""
    pool = await rt.pool()
    margin = refresh_margin(rt.settings).total_seconds()
    async with pool.acquire() as conn, conn.transaction():
        # One issuer at a time per CA: a duplicate task waits, then finds the new responder.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('ocsp-responder:' || $1::text, 0))",
                           str(ca_id))
        ca = await cache.load(conn, ca_id)
        if ca is None or ca.authority.status not in ("active", "disabled"):
            return "no-ca"
        ca_left = (ca.certificate.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        if ca_left <= 0:
            return "ca-expired"
        # Near the CA's end a responder cannot outlive it: one that lasts as long as the CA is current.
        if await db.current_responder(conn, ca_id, valid_for_seconds=min(margin, ca_left - 1)) is not None:
            return "current"
        responder_id = await store_new_responder(
            conn, rt.settings, rt.keyring, ca_id=ca_id, project_id=ca.authority.project_id,
            certificate=ca.certificate, key=ca.key, key_algorithm=ca.authority.key_algorithm)
    log.info("OCSP responder issued", extra={"ca_id": str(ca_id), "responder_id": str(responder_id)})
    return "issued"


async def refresh_due(rt: Runtime, cache: CaKeyCache) -> int:
    """Beat: issue a responder for every CA that has none, or whose newest one is within the margin."""
    pool = await rt.pool()
    async with pool.acquire() as conn:
        due = await db.cas_needing_responder(conn, refresh_margin(rt.settings).total_seconds())
    return await for_each_ca(due, lambda ca_id: issue_responder(rt, cache, ca_id), done="issued",
                             what="OCSP responder refresh")
