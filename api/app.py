"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from uuid import UUID

from aiohttp import web

from api import acme, applications, auth, authorities, batches, certificates, external, ocsp, ops, pki_files, profiles
from api.broker import Broker
from api.context import (
    BROKER,
    DB,
    ENDPOINTS,
    EVALUATOR_PROCESSES,
    EVALUATORS,
    ISSUING_CONTEXTS,
    KEYRING,
    METRICS,
    NOTIFICATIONS,
    OCSP_RESPONDERS,
    RATE_LIMITER,
    SETTINGS,
    TOKEN_CACHE,
)
from api.metrics import Metrics
from api.middleware import (
    auth_middleware,
    body_limit_middleware,
    error_middleware,
    metrics_middleware,
    rate_limit_middleware,
)
from api.notifications import Notifications
from api.ocsp_responders import ResponderCache
from api.rate_limits import RateLimiter
from api.routing import Routes
from api.web import routes as web_routes
from shared.access import TokenCache
from shared.config import Settings
from shared.db.pool import create_pool
from shared.errors import ConfigurationError
from shared.profiles import IssuingContextCache
from shared.secrets.keyring import KeyRing, root_key_from

ROUTE_TABLES: list[Routes] = [
    ops.routes, auth.routes, authorities.routes, profiles.routes, applications.routes, certificates.routes,
    batches.routes, pki_files.routes, ocsp.routes, acme.routes, external.routes, external.challenge_routes,
    web_routes,
]
# How often the OCSP answers each responder signed are written to the audit log (one event per responder).
OCSP_COUNT_FLUSH_SECONDS = 60.0


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, body_limit_middleware, auth_middleware,
                     rate_limit_middleware],
        # Per-route limits are enforced while reading (api.body.read_body); this is the outer bound.
        client_max_size=max(settings.max_body_bytes, settings.max_batch_body_bytes),
    )
    # CA keys are sealed under the CA root key so that a compromised front end cannot open one
    # (DESIGN.md 4.4): an API given it would undo that, so it refuses to start, without reading it.
    if settings.ca_root_key is not None or settings.ca_root_key_file is not None:
        raise ConfigurationError("KMS_CA_ROOT_KEY / KMS_CA_ROOT_KEY_FILE is set for the API: only workers may "
                                 "hold the CA root key; remove it from the API's environment")
    app[SETTINGS] = settings
    # The API opens server-generated leaf keys for callers allowed to read them (never CA keys), so it
    # needs the root key; without one it refuses to start. It seals one kind of secret: the HMAC keys of
    # ACME external account binding (api.acme.eab), made on first use, so it may create a project's
    # data key (on a pooled connection of its own, outside any transaction of the caller's).
    app[KEYRING] = KeyRing(root_key_from(settings), connect=lambda: app[DB].acquire())
    app[ISSUING_CONTEXTS] = IssuingContextCache()
    app[METRICS] = Metrics()
    app[ENDPOINTS] = [ep for table in ROUTE_TABLES for ep in table.endpoints]
    for table in ROUTE_TABLES:
        table.install(app)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_broker)
    app.cleanup_ctx.append(_ocsp_responders)
    app.cleanup_ctx.append(_evaluators)
    app.cleanup_ctx.append(_rate_limiter)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB] = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max, acquire_timeout=settings.db_acquire_timeout_seconds)
    async with app[DB].acquire() as conn:
        await app[KEYRING].verify(conn)
    notifications = app[NOTIFICATIONS] = Notifications(settings.database_url)
    # Tokens seen lately skip the database; a deleted identity's are dropped when its NOTIFY arrives.
    cache = app[TOKEN_CACHE] = TokenCache(lambda: notifications.listening and settings.token_cache_seconds > 0,
                                          ttl_seconds=settings.token_cache_seconds)
    notifications.on_prefix("identity:", lambda identity_id: cache.forget_identity(UUID(identity_id)))
    notifications.on_gap(cache.clear)
    await notifications.start()
    yield
    await app[NOTIFICATIONS].close()
    await app[DB].close()


async def _evaluators(app: web.Application) -> AsyncIterator[None]:
    # "spawn": a fork of this process would copy its event loop, pools and threads mid-flight.
    pool = ProcessPoolExecutor(max_workers=EVALUATOR_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
    app[EVALUATORS] = pool
    yield
    pool.shutdown(wait=False, cancel_futures=True)


async def _broker(app: web.Application) -> AsyncIterator[None]:
    app[BROKER] = Broker(app[SETTINGS].broker_url)
    yield
    await app[BROKER].close()


async def _ocsp_responders(app: web.Application) -> AsyncIterator[None]:
    cache = app[OCSP_RESPONDERS] = ResponderCache(app[DB], app[KEYRING], app[BROKER])
    flusher = asyncio.create_task(cache.flush_every(OCSP_COUNT_FLUSH_SECONDS))
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await cache.flush_counts()


async def _rate_limiter(app: web.Application) -> AsyncIterator[None]:
    app[RATE_LIMITER] = RateLimiter(app[SETTINGS])
    yield
    await app[RATE_LIMITER].close()
