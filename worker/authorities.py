"""Creating an internal CA's key and certificate, inside a worker.

One transaction holds the CA row lock from the check to the final UPDATE, so a duplicated task waits
for the first and then finds the CA no longer pending: at most one key and certificate per CA.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from shared.authorities import subject_of
from shared.db import audit
from shared.db import authorities as db
from shared.errors import KmsError
from shared.pki import builder as x509_builder
from shared.pki.keys import generate_private_key, private_key_to_der
from shared.pki.template import Validity
from shared.secrets.envelope import EnvelopeError
from worker import ocsp, revocation
from worker.ca_keys import CaKeyCache
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")


async def create_ca(rt: Runtime, cache: CaKeyCache, ca_id: UUID) -> str:
    """Make the key and certificate of a pending CA. Returns the CA's final status."""
    pool = await rt.pool()
    async with pool.acquire() as conn:
        # Counted outside the transaction below, so an attempt that crashes or rolls back still counts.
        attempts = await db.count_attempt(conn, ca_id)
    async with pool.acquire() as conn, conn.transaction():
        ca = await db.lock_pending(conn, ca_id)
        if ca is None:
            return "not-pending"
        try:
            if attempts > rt.settings.max_attempts:
                raise _Refused(f"gave up after {attempts - 1} attempts without finishing")
            issuer = None
            if ca.parent_ca_id is not None:
                issuer = await cache.load(conn, ca.parent_ca_id)
                if issuer is None or issuer.authority.status != "active":
                    raise _Refused("the parent CA is not active; it cannot sign")
            now = datetime.now(UTC)
            not_before, not_after = x509_builder.resolve_validity(
                Validity(ttl_seconds=ca.ttl_seconds, not_after=ca.requested_not_after,
                         not_before=now if ca.requested_not_after else None),
                now=now, backdate=timedelta(seconds=rt.settings.backdate_seconds),
                issuer_not_after=issuer.certificate.not_valid_after_utc if issuer else None,
            )
            key = generate_private_key(ca.key_algorithm)
            serial = x509_builder.new_serial()
            cert = x509_builder.build_ca_certificate(
                subject=subject_of(ca.subject), public_key=key.public_key(),
                issuer_cert=issuer.certificate if issuer else None,
                issuer_key=issuer.key if issuer else key, signature_algorithm=None,
                not_before=not_before, not_after=not_after, path_length=ca.max_path_length, serial=serial,
                urls=x509_builder.issuer_urls(rt.settings.public_url, ca.parent_ca_id) if issuer else None,
            )
        except (KmsError, _Refused, EnvelopeError) as exc:
            message = str(exc) if not isinstance(exc, EnvelopeError) else (
                f"the parent CA's key does not decrypt ({exc}); it cannot sign")
            await db.fail(conn, ca_id, message)
            await audit.record(conn, project_id=ca.project_id, actor="worker", action="ca.create.failed",
                               subject_type="ca", subject_id=str(ca_id), details={"error": message})
            await db.notify(conn, f"ca:{ca_id}")
            log.info("CA creation refused", extra={"ca_id": str(ca_id), "error": message})
            return "failed"
        # Under the CA root key's data key, which no API process can unwrap (DESIGN.md 4.4).
        sealed, sealed_by = await cache.seal(conn, ca.project_id, ca_id, private_key_to_der(key))
        serial_hex = format(serial, "x")
        await db.reserve_serial(conn, ca.parent_ca_id or ca_id, serial_hex)
        await db.activate(
            conn, ca_id, serial_number=serial_hex, not_before=not_before, not_after=not_after,
            certificate_pem=x509_builder.to_pem(cert),
            chain_pem=x509_builder.chain_pem(issuer.chain) if issuer else "",
            encrypted_private_key=sealed, key_sealed_by=sealed_by,
        )
        # Its first CRL, signed with the new key in the same transaction (and audited, invariant 11).
        await revocation.store_first_crl(conn, rt.settings, ca_id=ca_id, project_id=ca.project_id,
                                         certificate=cert, key=key)
        # And its OCSP responder (audited too), so its certificates' status can be asked from the start.
        await ocsp.store_new_responder(conn, rt.settings, rt.keyring, ca_id=ca_id, project_id=ca.project_id,
                                       certificate=cert, key=key, key_algorithm=ca.key_algorithm)
        # Every signature is audited, in the same transaction as the certificate (DESIGN.md 4.5).
        await audit.record(conn, project_id=ca.project_id, actor="worker", action="certificate.sign",
                           subject_type="ca", subject_id=str(ca_id),
                           details={"serial": serial_hex, "issuer": str(ca.parent_ca_id or ca_id),
                                    "subject": cert.subject.rfc4514_string()})
        await db.notify(conn, f"ca:{ca_id}")
    log.info("CA created", extra={"ca_id": str(ca_id), "serial": serial_hex})
    return "active"


class _Refused(Exception):
    """A CA that can never be created as requested (permanent, not retried)."""
