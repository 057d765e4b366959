"""Each CA's delegated OCSP responder, as the API holds it: certificate and key, opened once per responder.

A worker issues the responder from the CA key (``worker.ocsp``); its key is sealed under the project's
data key, which the API's root key opens, as it opens a server-made certificate key for its owner. The
cache re-reads the newest responder every ``RECHECK_SECONDS``, so a replacement is taken up within that
time, and a CA with none current asks a worker for one and waits briefly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from cryptography import x509

from api.broker import Broker
from shared import tasks as task_names
from shared.db import audit
from shared.db import authorities as authorities_db
from shared.db import ocsp as db
from shared.pki.keys import PrivateKey, load_private_key_der
from shared.secrets.keyring import KeyRing

log = logging.getLogger("kms.api")
RECHECK_SECONDS = 30.0
FIRST_RESPONDER_WAIT_SECONDS = 3.0


class NotAuthoritative(Exception):
    """No such CA, or one without a key: this responder cannot speak for it (answered ``unauthorized``)."""


@dataclass(frozen=True)
class LoadedResponder:
    id: UUID
    ca_id: UUID
    project_id: UUID
    ca_certificate: x509.Certificate
    certificate: x509.Certificate
    key: PrivateKey
    not_after: datetime
    checked_at: float  # time.monotonic() of the last read of the CA's newest responder


class ResponderCache:
    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, broker: Broker) -> None:
        self._pool = pool
        self._keyring = keyring
        self._broker = broker
        self._entries: dict[UUID, LoadedResponder] = {}
        # Answers signed per responder since the last flush: (project, CA, responder) -> count.
        self._signed: dict[tuple[UUID, UUID, UUID], int] = {}

    async def get(self, ca_id: UUID) -> LoadedResponder | None:
        """The CA's current responder; None when none is current yet (answer ``tryLater``)."""
        entry = self._entries.get(ca_id)
        now = datetime.now(UTC)
        if entry is not None and time.monotonic() - entry.checked_at < RECHECK_SECONDS and entry.not_after > now:
            return entry
        ca = await authorities_db.get(self._pool, ca_id)
        if ca is None or ca.status not in ("active", "disabled") or ca.certificate_pem is None:
            self._entries.pop(ca_id, None)
            raise NotAuthoritative(str(ca_id))
        row = await db.current_responder(self._pool, ca_id)
        if row is None:
            # A CA made before OCSP existed, or a worker that has not yet replaced an expired responder.
            await self._broker.send_best_effort(task_names.ISSUE_OCSP_RESPONDER, [str(ca_id)])
            deadline = time.monotonic() + FIRST_RESPONDER_WAIT_SECONDS
            while row is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                row = await db.current_responder(self._pool, ca_id)
            if row is None:
                return None
        if entry is not None and entry.id == row.id:
            entry = LoadedResponder(entry.id, ca_id, entry.project_id, entry.ca_certificate, entry.certificate,
                                    entry.key, entry.not_after, time.monotonic())
        else:
            der = await self._keyring.open(self._pool, row.project_id, row.encrypted_private_key, table=db.TABLE,
                                           row_id=row.id)
            entry = LoadedResponder(
                row.id, ca_id, row.project_id, x509.load_pem_x509_certificate(ca.certificate_pem.encode()),
                x509.load_pem_x509_certificate(row.certificate_pem.encode()), load_private_key_der(der),
                row.not_after, time.monotonic())
            log.info("OCSP responder loaded", extra={"ca_id": str(ca_id), "responder_id": str(row.id)})
        self._entries[ca_id] = entry
        return entry

    def count_signed(self, entry: LoadedResponder) -> None:
        key = (entry.project_id, entry.ca_id, entry.id)
        self._signed[key] = self._signed.get(key, 0) + 1

    async def flush_counts(self) -> int:
        """One ``ocsp.responses.sign`` audit event per responder that signed since the last flush (DESIGN.md
        invariant 11: OCSP answers are counted per signing batch, not audited one by one)."""
        counts, self._signed = self._signed, {}
        if not counts:
            return 0
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for (project_id, ca_id, responder_id), n in counts.items():
                    await audit.record(conn, project_id=project_id, actor="ocsp-responder",
                                       action="ocsp.responses.sign", subject_type="ca", subject_id=str(ca_id),
                                       details={"responderId": str(responder_id), "responses": n})
        except Exception as exc:  # kept for the next flush rather than lost
            for key, n in counts.items():
                self._signed[key] = self._signed.get(key, 0) + n
            log.warning("OCSP response counts not written; kept for the next flush", extra={"error": str(exc)})
            return 0
        return sum(counts.values())

    async def flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.flush_counts()
