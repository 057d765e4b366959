"""The routes of ``/api/v1/cert-manager/certificate-batches`` (bulk batches, an extension)."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

from aiohttp import web

from api.auth import current_identity
from api.batches import schemas
from api.body import parse, path_uuid, query_int
from api.certificates.handlers import private_keys_pem
from api.certificates.schemas import MAX_WAIT_SECONDS, check_idempotency_key, request_fingerprint
from api.context import BROKER, DB, EVALUATOR_PROCESSES, EVALUATORS, ISSUING_CONTEXTS, NOTIFICATIONS, SETTINGS
from api.render import json_response
from api.routing import Routes, absolute_url
from shared import access, registration, tasks
from shared.db import batches as db
from shared.db.batches import BatchRow, NewItem
from shared.db.identities import Identity
from shared.errors import BadRequest, FieldError, NotFound
from shared.profiles import IssuingContext

routes = Routes("bulk batches")
BASE = "/api/v1/cert-manager/certificate-batches"
NDJSON = "application/x-ndjson"
# Requests per broker message: a worker claims and signs one chunk at a time.
CHUNK_SIZE = 100


@routes.route("POST", BASE, summary="Submit up to 10,000 certificate requests at once", body=schemas.BatchBody,
              response=schemas.BatchCreated, status=202)
async def create(request: web.Request) -> web.Response:
    idempotency_key = check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = await parse(request, schemas.BatchBody)
    identity = current_identity(request)
    pool = request.app[DB]
    # Every profile named anywhere in the batch must be this project's; else nothing is written (404).
    contexts: dict[UUID, IssuingContext] = {}
    for profile_id in schemas.profile_ids(body):
        ctx = await request.app[ISSUING_CONTEXTS].get(pool, profile_id)
        if ctx is None or ctx.profile.project_id != identity.project_id:
            raise NotFound("no such certificate profile", [FieldError("profileId", f"no such profile {profile_id}")])
        contexts[profile_id] = ctx
    access.authorize(identity, identity.project_id, "issuer")
    fingerprint = request_fingerprint(body) if idempotency_key else None
    if idempotency_key is not None:
        # A retry (after a lost answer or a 503) gets the batch it repeats, before the costly evaluation.
        existing = await registration.repeated_batch(pool, identity.project_id, idempotency_key, fingerprint)
        if existing is not None:
            return _created(request, existing)
    items = await _evaluate(request, body, contexts)
    async with pool.acquire() as conn:
        registered = await registration.register_batch(
            conn, project_id=identity.project_id, profile_id=body.profile_id, requested_by=identity.id,
            items=items, idempotency_key=idempotency_key, request_hash=fingerprint)
    if not registered.created:  # a concurrent submission with the same key committed first
        return _created(request, registered.batch)
    batch, pending = registered.batch, registered.pending
    # One message per chunk, not per item. The batch is committed: sending is best effort, and the
    # reconciler re-sends whatever a lost message leaves pending (DESIGN.md 4.1). Answering 503 here
    # would make the client retry and double the batch.
    ids = [str(request_id) for _, request_id in pending]
    for start in range(0, len(ids), CHUNK_SIZE):
        await request.app[BROKER].send_best_effort(tasks.ISSUE_BATCH_CHUNK,
                                                   [ids[start:start + CHUNK_SIZE], str(batch.id)])
    return _created(request, batch)


def _created(request: web.Request, batch: BatchRow) -> web.Response:
    created = schemas.BatchCreated(batch_id=batch.id, total=batch.total,
                                   failed_at_submission=batch.failed_at_submission)
    return json_response(created.to_json(), status=202, headers={
        "Location": absolute_url(request, request.app[SETTINGS].public_url, f"{BASE}/{batch.id}"),
        "Retry-After": "1"})


# Below this many items a thread is cheaper than shipping the items to other processes.
PARALLEL_FROM = 1000


async def _evaluate(request: web.Request, body: schemas.BatchBody, contexts: dict[UUID, IssuingContext]
                    ) -> list[NewItem]:
    """Evaluate every item off the event loop. A large batch is split over the evaluator processes (all
    cores, and the GIL of this process stays free for other requests); a small one runs in a thread."""
    if len(body.items) < PARALLEL_FROM:
        return await asyncio.to_thread(registration.evaluate_batch_items, body.profile_id, body.items, contexts)
    pool = request.app[EVALUATORS]
    loop = asyncio.get_running_loop()
    size = -(-len(body.items) // (2 * EVALUATOR_PROCESSES))
    slices = [loop.run_in_executor(pool, registration.evaluate_slice, body.profile_id, body.items[start:start + size],
                                   start, contexts)
              for start in range(0, len(body.items), size)]
    return [item for part in await asyncio.gather(*slices) for item in part]


async def _batch(request: web.Request) -> tuple[Identity, BatchRow]:
    identity = current_identity(request)
    batch = await db.get_batch(request.app[DB], path_uuid(request, "batchId"), identity.project_id)
    if batch is None:
        raise NotFound("no such batch")
    access.authorize(identity, batch.project_id, "viewer")
    return identity, batch


@routes.route("GET", BASE + "/{batchId}", summary="A batch's live counters (long-poll until completed with ?wait=N)",
              response=schemas.BatchView, query={"wait": f"seconds to wait for completion (0-{MAX_WAIT_SECONDS})"})
async def get(request: web.Request) -> web.Response:
    wait = query_int(request, "wait", default=0, low=0, high=MAX_WAIT_SECONDS)
    _, batch = await _batch(request)
    pool = request.app[DB]

    async def read() -> schemas.BatchView:
        return schemas.BatchView.of(batch, await db.counts(pool, batch.id))

    view = await request.app[NOTIFICATIONS].wait_for(f"batch:{batch.id}", read,
                                                      lambda v: v.status == "completed", wait, shared=True)
    headers = {} if view.status == "completed" else {"Retry-After": "1"}
    return json_response(view.to_json(), headers=headers)


@routes.route("GET", BASE + "/{batchId}/items", summary="A batch's items by index (NDJSON stream with "
              "Accept: application/x-ndjson)", response=schemas.BatchItemPage,
              query={"status": "pending|issued|failed", "cursor": "nextCursor of the previous page",
                     "limit": "1-1000 (100)"})
async def items(request: web.Request) -> web.StreamResponse:
    identity, batch = await _batch(request)
    status = request.query.get("status")
    if status is not None and status not in ("pending", "issued", "failed"):
        raise BadRequest("status must be pending, issued or failed", [FieldError("status", "invalid")])
    after = schemas.decode_item_cursor(request.query.get("cursor"))
    if NDJSON in request.headers.get("Accept", ""):
        return await _stream(request, identity, batch, status, after)
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    views = await _page(request, identity, batch, status, after, limit)
    page = schemas.BatchItemPage(items=views,
                             next_cursor=schemas.encode_item_cursor(views[-1].index) if len(views) == limit else None)
    return json_response(page.to_json())


async def _page(request: web.Request, identity: Identity, batch: BatchRow, status: str | None, after: int,
                limit: int) -> list[schemas.BatchItemView]:
    pool = request.app[DB]
    async with pool.acquire() as conn:
        rows = await db.items(conn, batch.id, status=status, after_index=after, limit=limit)
        keys = await private_keys_pem(request, conn, identity, [i.certificate for i in rows
                                                                if i.certificate is not None])
        return [schemas.BatchItemView.of(i.request, i.certificate,
                                     keys.get(i.certificate.id) if i.certificate is not None else None) for i in rows]


async def _stream(request: web.Request, identity: Identity, batch: BatchRow, status: str | None,
                  after: int) -> web.StreamResponse:
    """Every matching item, one JSON object a line, fetched page by page (memory stays flat)."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    while True:
        views = await _page(request, identity, batch, status, after, 500)
        if not views:
            break
        await response.write("".join(json.dumps(v.to_json()) + "\n" for v in views).encode())
        after = views[-1].index
    await response.write_eof()
    return response
