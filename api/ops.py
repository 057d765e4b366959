"""Operational endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from api.context import BROKER, DB, ENDPOINTS, METRICS
from api.render import json_response
from api.routing import Routes, openapi_document
from shared.db.pool import ping as db_ping
from shared.errors import ServiceUnavailable

routes = Routes("operations")
log = logging.getLogger("kms.api")


@routes.route("GET", "/healthz", summary="The process is up", public=True)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.route("GET", "/api/status", summary="Upstream's health check (older clients)", public=True)
async def status(request: web.Request) -> web.Response:
    return json_response({"message": "Ok"})


@routes.route("GET", "/readyz", summary="PostgreSQL and the broker are reachable", public=True)
async def readyz(request: web.Request) -> web.Response:
    checks = {"database": _check(db_ping(request.app[DB])), "broker": _check(request.app[BROKER].ping())}
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    down = [name for name, ok in results.items() if not ok]
    if down:
        raise ServiceUnavailable(f"not ready: {', '.join(down)} unreachable", retry_after=5)
    return json_response({"status": "ready", "checks": {k: "ok" for k in results}})


async def _check(probe: object) -> bool:
    try:
        await asyncio.wait_for(probe, 3)  # type: ignore[arg-type]
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness check failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    return True


@routes.route("GET", "/metrics", summary="Prometheus metrics", public=True)
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.route("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", public=True)
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[ENDPOINTS], title="Hanzo KMS PKI", version="1"))
