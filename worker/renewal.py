"""Server-driven renewal (DESIGN.md 7), run periodically by ``kms-pki beat``.

Each run takes the certificates whose renewal has fallen due, in batches of ``BATCH`` (each batch one
short transaction, its rows locked with SKIP LOCKED so two runs at once never take the same one), and
registers a renewal request for each through the registration authority: the policy of the moment
decides, as for any request. In the same transaction each certificate is marked as being renewed by its
request, so the next run does not renew it again. The new requests are handed to the workers in chunks
(as the reconciler does): 10,000 certificates falling due together renew at the batch path's speed. A
lost message is no loss: the reconciler re-sends any request left pending.

A renewal the RA refuses, or that the worker later fails, records ``renewal_error`` on the old
certificate, and the scan stops trying it. The old certificate stays active until it expires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from shared import registration
from shared.db import external as external_db
from shared.db import requests as db
from shared.profiles import IssuingContext, load_issuing_context
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
BATCH = 1000
CHUNK = 100
# One run handles at most this many batches; a larger backlog is the next run's.
MAX_BATCHES = 50


@dataclass(frozen=True)
class Renewed:
    scheduled: int
    refused: int


async def schedule_renewals(rt: Runtime, send_requests: Callable[[list[str]], None], *, batch: int = BATCH,
                            send_external: Callable[[str], None] | None = None) -> Renewed:
    """``send_external`` sends the renewals of external CAs' certificates to their own task, one each."""
    pool = await rt.pool()
    scheduled = refused = 0
    contexts: dict[UUID, IssuingContext | None] = {}
    async with pool.acquire() as conn:
        for _ in range(MAX_BATCHES):
            async with conn.transaction():
                due = await db.due_renewals(conn, batch)
                for profile_id in {c.profile_id for c in due} - contexts.keys():
                    contexts[profile_id] = await load_issuing_context(conn, profile_id)
                ids, failures = await registration.register_scheduled_renewals(conn, due, contexts)
            # After the commit: a worker must find the requests it is sent.
            if send_external is not None and ids:
                external = await external_db.external_ids(conn, ids)
                for request_id in external:
                    send_external(str(request_id))
                ids = [i for i in ids if i not in external]
            for start in range(0, len(ids), CHUNK):
                send_requests([str(r) for r in ids[start:start + CHUNK]])
            scheduled += len(ids)
            refused += len(failures)
            if len(due) < batch:
                break
    if scheduled or refused:
        log.info("renewals scheduled", extra={"scheduled": scheduled, "refused": refused})
    return Renewed(scheduled, refused)
