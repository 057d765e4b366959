"""Typed application and request keys (aiohttp ``AppKey``), so nothing is looked up by a bare string."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import asyncpg
from aiohttp import web

from api.broker import Broker
from api.metrics import Metrics
from api.notifications import Notifications
from api.ocsp_responders import ResponderCache
from api.rate_limits import RateLimiter
from api.routing import Endpoint
from shared.config import Settings
from shared.profiles import IssuingContextCache
from shared.secrets.keyring import KeyRing

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
BROKER = web.AppKey("broker", Broker)
METRICS = web.AppKey("metrics", Metrics)
ENDPOINTS = web.AppKey("endpoints", list[Endpoint])
NOTIFICATIONS = web.AppKey("notifications", Notifications)
KEYRING = web.AppKey("keyring", KeyRing)
ISSUING_CONTEXTS = web.AppKey("issuing_contexts", IssuingContextCache)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
OCSP_RESPONDERS = web.AppKey("ocsp_responders", ResponderCache)
# Processes that evaluate the items of large batches in parallel (see api.batches).
EVALUATORS = web.AppKey("evaluators", ProcessPoolExecutor)
EVALUATOR_PROCESSES = 2

# Request-scoped values live in the request mapping under these names.
REQUEST_ID = "kms.request_id"
IDENTITY = "kms.identity"
