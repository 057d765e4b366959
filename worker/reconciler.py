"""The reconciler: PostgreSQL is the truth and the broker only a doorbell (DESIGN.md invariant 1).

Run periodically by ``kms-pki beat``. It re-sends the task of every request (and CA) left pending with
no progress for ``reconcile_after_seconds`` (its message was lost, e.g. Redis was flushed) or left
processing past its lease (its worker died), and gives up, with a reason, on a request that has been
claimed ``max_attempts`` times without finishing. Re-sending is always safe: the claim lets one
worker through and the others find nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from shared.db import audit
from shared.db import authorities as ca_db
from shared.db import external as external_db
from shared.db import requests as db
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
BATCH = 2000


@dataclass(frozen=True)
class Reconciled:
    requeued: int
    gave_up: int
    cas_requeued: int


CHUNK = 100


async def reconcile(rt: Runtime, send_requests: Callable[[list[str]], None], send_ca: Callable[[str], None],
                    send_external: Callable[[str], None] | None = None,
                    send_acme_ca: Callable[[str], None] | None = None) -> Reconciled:
    """``send_external`` and ``send_acme_ca`` re-send external CAs' requests and ACME CAs' accounts to their
    own tasks (worker.external): an external request is never handed to the internal signers."""
    pool = await rt.pool()
    settings = rt.settings
    async with pool.acquire() as conn:
        stale = await db.stale_open_requests(conn, settings.reconcile_after_seconds, BATCH)
        external = await external_db.stale_external(conn, settings.reconcile_after_seconds, BATCH) \
            if send_external is not None else []
        hopeless = [s for s in stale + external if s.attempts >= settings.max_attempts]
        retry = [s.id for s in stale if s.attempts < settings.max_attempts]
        for s in hopeless:
            message = (f"gave up after {s.attempts} attempts without finishing"
                       + (f"; last error: {s.last_error}" if s.last_error else ""))
            async with conn.transaction():
                req = await db.get_request(conn, s.id)
                if req is not None and await db.finish_failed(conn, s.id, None, message):
                    await audit.record(conn, project_id=req.project_id, actor="reconciler",
                                       action="certificate.sign.abandoned", subject_type="certificate_request",
                                       subject_id=str(s.id), details={"error": message})
                    await ca_db.notify(conn, f"req:{s.id}")
        if retry:
            # Touch first, so the next run does not send them again while these messages are in flight.
            await db.touch_requests(conn, retry)
            # One message per chunk of requests, not per request: a lost batch of 10,000 is 100 messages.
            for start in range(0, len(retry), CHUNK):
                send_requests([str(r) for r in retry[start:start + CHUNK]])
        external_retry = [s.id for s in external if s.attempts < settings.max_attempts]
        if external_retry and send_external is not None:
            await db.touch_requests(conn, external_retry)
            for request_id in external_retry:  # one message each: each is its own upstream order
                send_external(str(request_id))
        cas = await ca_db.stale_pending(conn, settings.reconcile_after_seconds)
        if cas:
            await ca_db.touch(conn, cas)
            for ca_id in cas:
                send_ca(str(ca_id))
        acme_cas = await external_db.stale_pending_acme(conn, settings.reconcile_after_seconds) \
            if send_acme_ca is not None else []
        if acme_cas and send_acme_ca is not None:
            await ca_db.touch(conn, acme_cas)
            for ca_id in acme_cas:
                send_acme_ca(str(ca_id))
        retry += external_retry
        cas += acme_cas
    if stale or external or cas:
        log.info("reconciled", extra={"requeued": len(retry), "gave_up": len(hopeless), "cas_requeued": len(cas)})
    return Reconciled(len(retry), len(hopeless), len(cas))
