"""Middlewares, outermost first: metrics, request id + problem+json errors, body limit, authentication,
rate limits."""

from __future__ import annotations

import logging
import re
import time
import uuid

import asyncpg
import kombu.exceptions
import redis.exceptions
from aiohttp import web

from api.auth import LOGIN_PATH
from api.body import BODY_LIMIT
from api.context import DB, ENDPOINTS, IDENTITY, METRICS, RATE_LIMITER, REQUEST_ID, SETTINGS
from api.problem import from_error, problem_response
from api.rate_limits import UNLIMITED_ROUTES
from api.routing import Handler, is_public, is_relying_party_route
from shared import access
from shared.errors import KmsError, PayloadTooLarge, Unauthorized
from shared.logging import request_id_var

log = logging.getLogger("kms.api")
LARGE_BODY_ROUTES = frozenset({"/api/v1/cert-manager/certificate-batches"})

# Failures of PostgreSQL or the broker: the request may succeed later, so they are 503, not 500.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, redis.exceptions.ConnectionError,
    kombu.exceptions.OperationalError,
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        request.app[METRICS].observe(request.method, _route_label(request), status, time.perf_counter() - start)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives every request an id (a sane client-sent X-Request-Id is kept) and turns every error into
    problem+json. Unexpected exceptions are logged with their traceback and answered with a bare 500
    that reveals nothing."""
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    start = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except KmsError as err:
            response = from_error(err, rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            if exc.status == 413:
                detail = "request body too large"
            response = problem_response(exc.status, exc.reason, detail, request_id=rid, headers=headers)
        except DEPENDENCY_ERRORS as exc:
            log.warning("dependency unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            response = problem_response(
                503, "Service Unavailable", "a dependency (database or broker) is unavailable; retry shortly",
                request_id=rid, headers={"Retry-After": "5"},
            )
        except Exception:
            log.exception("unhandled error", extra={"path": request.path, "method": request.method})
            response = problem_response(
                500, "Internal Server Error", "an unexpected error occurred; quote the request id",
                request_id=rid,
            )
        response.headers["X-Request-Id"] = rid
        # The access log: the path and status only, never headers (they carry the bearer token).
        log.info("request", extra={"method": request.method, "path": request.path, "status": response.status,
                                   "ms": round((time.perf_counter() - start) * 1000, 2)})
        return response
    finally:
        request_id_var.reset(token)


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses an announced oversize body before reading it; chunked bodies are capped while read."""
    settings = request.app[SETTINGS]
    resource = request.match_info.route.resource
    large = resource is not None and resource.canonical in LARGE_BODY_ROUTES and request.method == "POST"
    limit = settings.max_batch_body_bytes if large else settings.max_body_bytes
    request[BODY_LIMIT] = limit
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes exceeds the {limit}-byte limit")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if request.match_info.http_exception is not None or resource is None:
        return await handler(request)  # unknown route or wrong method: the router's answer stands
    if is_public(request.app[ENDPOINTS], request.method, resource.canonical):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token; send Authorization: Bearer <accessToken>")
    request[IDENTITY] = await access.authenticate(request.app[DB], token.strip())
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: an identity's requests draw from its bucket, unauthenticated ones from their
    source's (login from its own, stricter one). Probes and metrics are never limited (api.rate_limits)."""
    limiter = request.app[RATE_LIMITER]
    identity = request.get(IDENTITY)
    resource = request.match_info.route.resource
    if identity is not None:
        await limiter.request_of_identity(identity.id)
    elif resource is None or request.match_info.http_exception is not None or resource.canonical in UNLIMITED_ROUTES:
        pass  # the router's 404/405, or a probe
    elif resource.canonical == LOGIN_PATH:
        await limiter.login_attempt(request)
    elif is_relying_party_route(request.app[ENDPOINTS], request.method, resource.canonical):
        await limiter.relying_party_request(request)
    else:
        await limiter.unauthenticated_request(request)
    return await handler(request)
