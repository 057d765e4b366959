"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api import auth, ops
from api.broker import Broker
from api.context import BROKER, DB, ENDPOINTS, METRICS, SETTINGS
from api.metrics import Metrics
from api.middleware import auth_middleware, body_limit_middleware, error_middleware, metrics_middleware
from api.routing import Routes
from shared.config import Settings
from shared.db.pool import create_pool

ROUTE_TABLES: list[Routes] = [ops.routes, auth.routes]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, body_limit_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[ENDPOINTS] = [ep for table in ROUTE_TABLES for ep in table.endpoints]
    for table in ROUTE_TABLES:
        table.install(app)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_broker)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB] = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max)
    yield
    await app[DB].close()


async def _broker(app: web.Application) -> AsyncIterator[None]:
    app[BROKER] = Broker(app[SETTINGS].broker_url)
    yield
    await app[BROKER].close()
