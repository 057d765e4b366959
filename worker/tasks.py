"""Celery tasks: thin wrappers around plain functions in ``worker/``, taking ids only.

Transient failures (database or network) retry with exponential backoff; anything the request got
wrong ends it ``failed`` inside the function, so a task never retries a hopeless request.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from shared import tasks as names
from worker import authorities
from worker.app import app
from worker.ca_keys import CaKeyCache
from worker.runtime import runtime

TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, asyncpg.SerializationError,
             asyncpg.DeadlockDetectedError)

_ca_keys: CaKeyCache | None = None


def ca_keys() -> CaKeyCache:
    global _ca_keys
    if _ca_keys is None:
        _ca_keys = CaKeyCache(runtime().settings.ca_key_cache_seconds)
    return _ca_keys


@app.task(name=names.CREATE_CA, bind=True, max_retries=8)
def create_ca(self, ca_id: str) -> str:  # type: ignore[no-untyped-def]
    rt = runtime()
    try:
        return rt.run(authorities.create_ca(rt, ca_keys(), UUID(ca_id)))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30)) from exc
