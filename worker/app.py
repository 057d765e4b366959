"""The Celery application: ``celery -A worker.app worker`` (or ``kms-pki worker``) starts it."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown

from shared.config import get_settings
from shared.logging import configure_logging
from shared.secrets.keyring import ca_root_key_from, root_key_from
from shared.tasks import (
    ACME_CLEANUP,
    RECONCILE,
    REFRESH_CRLS,
    REFRESH_OCSP_RESPONDERS,
    RENEW_DUE,
    VACUUM,
    celery_config,
)
from worker import ready_listener

settings = get_settings()
# Refuse to start without a root key and a CA root key: a worker that cannot seal keys must not sign anything.
root_key_from(settings)
ca_root_key_from(settings)
app = Celery("kms-worker")
app.conf.update(celery_config(settings.broker_url))
app.conf.beat_schedule = {
    "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_interval_seconds,
                  # A reconcile that could not run for a minute is pointless later: a newer one covers it
                  # (runs are idempotent). Long enough to outlast the signing chunks a worker holds.
                  "options": {"expires": max(60.0, settings.reconcile_interval_seconds * 4)}},
    # Server-driven renewal (worker.renewal): runs are idempotent, so a late one is covered by the next.
    "renew": {"task": RENEW_DUE, "schedule": settings.renewal_interval_seconds,
              "options": {"expires": max(60.0, settings.renewal_interval_seconds * 4)}},
    # CRLs whose nextUpdate approaches (or CAs without one) are re-signed long before a client sees one stale.
    "refresh-crls": {"task": REFRESH_CRLS, "schedule": settings.crl_refresh_interval_seconds,
                     "options": {"expires": max(60.0, settings.crl_refresh_interval_seconds * 2)}},
    # ACME (worker.acme_validation): expired nonces, orders and authorizations go; lost validations ring again.
    "acme-cleanup": {"task": ACME_CLEANUP, "schedule": settings.acme_cleanup_interval_seconds,
                     "options": {"expires": max(60.0, settings.acme_cleanup_interval_seconds * 2)}},
    # Each CA's delegated OCSP responder certificate, re-issued once half its validity is gone.
    "refresh-ocsp-responders": {"task": REFRESH_OCSP_RESPONDERS, "schedule": settings.ocsp_refresh_interval_seconds,
                                "options": {"expires": max(60.0, settings.ocsp_refresh_interval_seconds * 2)}},
}
if settings.vacuum_interval_seconds > 0:
    # Does nothing while the server's autovacuum is on; with it off, what autovacuum would (worker.maintenance).
    app.conf.beat_schedule["vacuum"] = {"task": VACUUM, "schedule": settings.vacuum_interval_seconds,
                                        "options": {"expires": max(60.0, settings.vacuum_interval_seconds)}}
app.conf.include = ["worker.tasks"]
# Every pool process listens for new ready requests (worker.ready_listener), stopping cleanly with it.
worker_process_init.connect(ready_listener.start_in_this_process, weak=False)
worker_process_shutdown.connect(ready_listener.stop_in_this_process, weak=False)


@setup_logging.connect
def _logging(**_: object) -> None:
    # Our structured logging, not Celery's: task arguments are ids only, never secrets.
    configure_logging(settings.log_level, settings.log_format)


log = logging.getLogger("kms.worker")


@worker_init.connect
def _prepare_keys(**_: object) -> None:
    """A worker started with a root key or CA root key other than the database's refuses to start
    (ConfigurationError), rather than failing every task; then CA keys sealed before migration 0007 are
    re-sealed under the CA root key. An unreachable database is not fatal here: tasks do both again."""
    import asyncio

    import asyncpg

    from shared.db.pool import dedicated
    from shared.errors import ConfigurationError
    from worker.key_migration import key_rings, prepare_keys

    async def prepare() -> None:
        root, ca = key_rings(settings)
        async with dedicated(settings.database_url, connect_timeout=5) as conn:
            await prepare_keys(conn, root, ca)

    try:
        asyncio.run(prepare())
    except ConfigurationError as exc:
        log.critical("refusing to start: %s", exc)
        # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal handlers.
        raise SystemExit(f"kms-pki worker: {exc}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        log.warning("keys not verified at start (database unreachable); tasks verify them",
                    extra={"error": f"{type(exc).__name__}: {exc}"})
