"""Signing a CA's CRL, inside a worker (the only holder of CA keys; DESIGN.md 7, invariants 9 and 11).

One transaction holds the CA's CRL lock from reading the revocations to storing the CRL and its audit
event, so CRL numbers strictly increase and a CRL lists every revocation committed before it. A task
that finds the newest CRL already covering every revocation of the CA, and fresh for more than the
re-sign margin, signs nothing: a burst of revocations, each enqueuing a task, shares one CRL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shared.config import Settings
from shared.db import revocation as db
from shared.pki.crl import CrlEntry, build_crl
from shared.pki.keys import PrivateKey
from worker.ca_keys import CaKeyCache
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")


def refresh_margin(validity_seconds: int) -> timedelta:
    """A CRL is re-signed once less than half its validity remains."""
    return timedelta(seconds=validity_seconds / 2)


async def store_first_crl(conn: asyncpg.Connection, settings: Settings, *, ca_id: UUID, project_id: UUID,
                          certificate: x509.Certificate, key: PrivateKey) -> None:
    """CRL number 1 (empty) of a CA, in the transaction that activates it: an active CA always has a CRL."""
    covered_at = await conn.fetchval("SELECT clock_timestamp()")
    this_update = datetime.now(UTC) - timedelta(seconds=min(settings.backdate_seconds,
                                                            settings.crl_validity_seconds // 4))
    crl = build_crl(issuer_cert=certificate, issuer_key=key, crl_number=1, this_update=this_update,
                    next_update=this_update + timedelta(seconds=settings.crl_validity_seconds), entries=[])
    assert crl.next_update_utc is not None
    await db.store_crl(conn, ca_id=ca_id, project_id=project_id, crl_number=1, this_update=crl.last_update_utc,
                       next_update=crl.next_update_utc, covered_at=covered_at, der=crl.public_bytes(Encoding.DER),
                       entries=0)


async def sign_crl(rt: Runtime, cache: CaKeyCache, ca_id: UUID, *, force: bool = False) -> str:
    """Sign a new CRL for the CA unless its newest one is current. Returns what happened."""
    validity = rt.settings.crl_validity_seconds
    pool = await rt.pool()
    async with pool.acquire() as conn, conn.transaction():
        covered_at = await db.lock_ca(conn, ca_id)
        ca = await cache.load(conn, ca_id)
        if ca is None or ca.authority.status not in ("active", "disabled"):
            return "no-ca"
        latest = await db.latest_crl(conn, ca_id)
        if latest is not None and not force:
            newest_revocation = await db.latest_revocation(conn, ca_id)
            fresh = latest.next_update - datetime.now(UTC) > refresh_margin(validity)
            if fresh and (newest_revocation is None or newest_revocation < latest.covered_at):
                return "current"
        revoked = await db.revoked_serials(conn, ca_id, latest.this_update if latest is not None else None)
        # thisUpdate a little in the past (clients' clocks run behind), never later than nextUpdate.
        this_update = datetime.now(UTC) - timedelta(seconds=min(rt.settings.backdate_seconds, validity // 4))
        next_update = this_update + timedelta(seconds=validity)
        number = (latest.crl_number if latest is not None else 0) + 1
        crl = build_crl(
            issuer_cert=ca.certificate, issuer_key=ca.key, crl_number=number, this_update=this_update,
            next_update=next_update,
            entries=[CrlEntry(int(r.serial_number, 16), r.revoked_at, r.revocation_reason) for r in revoked])
        await db.store_crl(conn, ca_id=ca_id, project_id=ca.authority.project_id, crl_number=number,
                           this_update=crl.last_update_utc, next_update=crl.next_update_utc or next_update,
                           covered_at=covered_at, der=crl.public_bytes(Encoding.DER), entries=len(revoked))
    log.info("CRL signed", extra={"ca_id": str(ca_id), "crl_number": number, "entries": len(revoked)})
    return "signed"


async def refresh_due(rt: Runtime, cache: CaKeyCache) -> int:
    """Beat: sign a CRL for every CA that has none, or whose newest one is within the re-sign margin."""
    pool = await rt.pool()
    margin = refresh_margin(rt.settings.crl_validity_seconds).total_seconds()
    async with pool.acquire() as conn:
        due = await db.cas_needing_crl(conn, margin)
    return await for_each_ca(due, lambda ca_id: sign_crl(rt, cache, ca_id), done="signed", what="CRL refresh")


async def for_each_ca(ca_ids: list[UUID], job: Callable[[UUID], Awaitable[str]], *, done: str, what: str) -> int:
    """Run a beat job for each CA, counting the runs that answered ``done``. One CA whose key does not
    open (or whose job fails otherwise) is logged and must not starve the others."""
    count = 0
    for ca_id in ca_ids:
        try:
            if await job(ca_id) == done:
                count += 1
        except Exception:
            log.exception(f"{what} failed", extra={"ca_id": str(ca_id)})
    return count
