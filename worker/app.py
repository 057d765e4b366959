"""The Celery application: ``celery -A worker.app worker`` (or ``kms-pki worker``) starts it."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, worker_init

from shared.config import get_settings
from shared.keyring import root_key_from
from shared.logging import configure_logging
from shared.tasks import RECONCILE, celery_config

settings = get_settings()
# Refuse to start without a root key: a worker that cannot seal keys must not sign anything.
root_key_from(settings)
app = Celery("kms-worker")
app.conf.update(celery_config(settings.broker_url))
app.conf.beat_schedule = {
    "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_interval_seconds,
                  # A reconcile that could not run for a minute is pointless later: a newer one covers it
                  # (runs are idempotent). Long enough to outlast the signing chunks a worker holds.
                  "options": {"expires": max(60.0, settings.reconcile_interval_seconds * 4)}},
}
app.conf.include = ["worker.tasks"]


@setup_logging.connect
def _logging(**_: object) -> None:
    # Our structured logging, not Celery's: task arguments are ids only, never secrets.
    configure_logging(settings.log_level, settings.log_format)


log = logging.getLogger("kms.worker")


@worker_init.connect
def _verify_root_key(**_: object) -> None:
    """A worker started with a root key other than the database's refuses to start (ConfigurationError),
    rather than failing every task. An unreachable database is not fatal here: tasks check again."""
    import asyncio

    import asyncpg

    from shared.keyring import KeyRing

    async def check() -> None:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        try:
            await KeyRing(root_key_from(settings)).verify(conn)
        finally:
            await conn.close()

    from shared.errors import ConfigurationError

    try:
        asyncio.run(check())
    except ConfigurationError as exc:
        log.critical("refusing to start: %s", exc)
        # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal handlers.
        raise SystemExit(f"kms-pki worker: {exc}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        log.warning("root key not verified at start (database unreachable); tasks verify it",
                    extra={"error": f"{type(exc).__name__}: {exc}"})
