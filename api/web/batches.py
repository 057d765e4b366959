"""A project's batches, and a batch's page: a progress bar that follows it live, and its items' results."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from api.batches.schemas import BatchView
from api.body import query_int
from api.context import DB, NOTIFICATIONS
from api.web.base import Visit, page, path_uuid
from shared.db import batches as batches_db
from shared.db.batches import BatchRow
from shared.errors import NotFound

ITEMS_PER_PAGE: Final = 100
MAX_WAIT_SECONDS: Final = 30


@page("GET", "/projects/{projectId}/batches", summary="A project's newest batches")
async def batches(visit: Visit) -> web.StreamResponse:
    pool = visit.request.app[DB]
    rows = await batches_db.list_batches(pool, visit.project_id, limit=50)
    views = [BatchView.of(b, await batches_db.counts(pool, b.id)) for b in rows]
    return visit.render("batches.html", batches=views)


async def _batch(visit: Visit) -> BatchRow:
    batch = await batches_db.get_batch(visit.request.app[DB], path_uuid(visit, "batchId"), visit.project_id)
    if batch is None:
        raise NotFound("no such batch in this project")
    return batch


@page("GET", "/projects/{projectId}/batches/{batchId}", summary="A batch: live progress and its items' results")
async def batch_page(visit: Visit) -> web.StreamResponse:
    batch = await _batch(visit)
    pool = visit.request.app[DB]
    view = BatchView.of(batch, await batches_db.counts(pool, batch.id))
    after = query_int(visit.request, "after", default=-1, low=-1, high=10_000_000) \
        if visit.request.query.get("after") else -1
    items = await batches_db.items(pool, batch.id, status=None, after_index=after, limit=ITEMS_PER_PAGE)
    more = len(items) == ITEMS_PER_PAGE
    return visit.render("batch.html", batch=view, items=items,
                        next_after=items[-1].request.batch_index if more else None,
                        status_url=visit.url(f"/batches/{batch.id}/status"))


@page("GET", "/projects/{projectId}/batches/{batchId}/status",
      summary="A batch's counters for its page's script (long-poll until they change with ?wait=N&seen=N)", json=True)
async def batch_status(visit: Visit) -> web.StreamResponse:
    wait = query_int(visit.request, "wait", default=0, low=0, high=MAX_WAIT_SECONDS)
    seen = query_int(visit.request, "seen", default=-1, low=-1, high=10_000_000)
    batch = await _batch(visit)
    pool = visit.request.app[DB]

    async def read() -> BatchView:
        return BatchView.of(batch, await batches_db.counts(pool, batch.id))

    # Wakes when more items are final than the page has seen, or when the batch is complete.
    view = await visit.request.app[NOTIFICATIONS].wait_for(
        f"batch:{batch.id}", read, lambda v: v.status == "completed" or v.issued + v.failed != seen, wait,
        shared=True)
    return web.json_response({"status": view.status, "total": view.total, "issued": view.issued,
                              "failed": view.failed, "pending": view.pending, "final": view.status == "completed"})
