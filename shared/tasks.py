"""Task names and queue names: the contract between the API (which sends by name) and the worker.

The API never imports ``worker``; it sends these names with ids only, never secrets or payloads.
"""

from __future__ import annotations

from typing import Any, Final

from kombu.entity import Queue

# Queues: signing is CPU-bound and local; external CAs are network-bound and get their own queue so
# a slow external CA cannot starve local issuance.
QUEUE_SIGNING: Final = "kms.signing"
QUEUE_EXTERNAL: Final = "kms.external"
# Control work (the reconciler) has a queue of its own, so it never waits behind a backlog of signing
# or network work. Every queue is declared below, so any worker (`kms-pki worker` or a plain
# `celery -A worker.app worker`) consumes all three.
QUEUE_CONTROL: Final = "kms.control"
QUEUES: Final = (QUEUE_SIGNING, QUEUE_EXTERNAL, QUEUE_CONTROL)

ISSUE_CERTIFICATE: Final = "kms.issue_certificate"
CREATE_CA: Final = "kms.create_ca"
ISSUE_BATCH_CHUNK: Final = "kms.issue_batch_chunk"
RECONCILE: Final = "kms.reconcile"
RENEW_DUE: Final = "kms.renew_due"
SIGN_CRL: Final = "kms.sign_crl"
REFRESH_CRLS: Final = "kms.refresh_crls"
ISSUE_OCSP_RESPONDER: Final = "kms.issue_ocsp_responder"
REFRESH_OCSP_RESPONDERS: Final = "kms.refresh_ocsp_responders"
# ACME (DESIGN.md 8): challenge validation makes outbound connections, so it rides the network queue.
ACME_VALIDATE: Final = "kms.acme_validate"
ACME_CLEANUP: Final = "kms.acme_cleanup"
# Vacuuming the service's tables when the server's autovacuum is off (worker.maintenance).
VACUUM: Final = "kms.vacuum"
# External CAs (worker.external): obtain a request's certificate from its upstream CA, and register an ACME
# CA's account. Both network-bound, on kms.external.
OBTAIN_EXTERNAL: Final = "kms.obtain_external"
REGISTER_ACME_ACCOUNT: Final = "kms.register_acme_account"

# The doorbell (issue 11): a Redis key the API sets (SET NX, expiring after DOORBELL_HOLD_MS) when it sends
# a chunk of new single requests, and the worker deletes before it claims every ready request. While it
# is set, a chunk message is already on its way and its worker will claim what the API adds meanwhile, so
# the API sends no other: one message per worker cycle under load, not one per request. It expires, so a
# lost message holds nothing back longer than that (and the reconciler re-sends what stays pending).
DOORBELL_KEY: Final = "kms:doorbell"
DOORBELL_HOLD_MS: Final = 1000


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://", "unix://"))


def ready_channel(broker_url: str) -> str:
    """The fast doorbell (worker.ready_listener): the API PUBLISHes here first; only when no worker process
    is subscribed does it fall back to the doorbell message above. Redis channels ignore the database
    number, so the channel names it: deployments sharing one Redis never ring each other's workers."""
    from redis.connection import parse_url

    return f"kms:ready:{parse_url(broker_url).get('db', 0)}"  # type: ignore[no-untyped-call]


def celery_config(broker_url: str) -> dict[str, Any]:
    """Settings shared by the worker's Celery app and the API's sending-only app."""
    return {
        "broker_url": broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        # A message is acknowledged only after its task ran; if the worker dies, it is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message reserved per pool process: a reconcile (on its own queue) then waits behind at most
        # the chunk each process is signing, never behind a reserved backlog of them.
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE_SIGNING,
        "task_queues": [Queue(name) for name in QUEUES],  # type: ignore[no-untyped-call]
        "task_routes": {ISSUE_BATCH_CHUNK: {"queue": QUEUE_SIGNING}, RECONCILE: {"queue": QUEUE_CONTROL},
                        RENEW_DUE: {"queue": QUEUE_CONTROL}, SIGN_CRL: {"queue": QUEUE_SIGNING},
                        REFRESH_CRLS: {"queue": QUEUE_CONTROL}, ISSUE_OCSP_RESPONDER: {"queue": QUEUE_CONTROL},
                        REFRESH_OCSP_RESPONDERS: {"queue": QUEUE_CONTROL}, ACME_VALIDATE: {"queue": QUEUE_EXTERNAL},
                        ACME_CLEANUP: {"queue": QUEUE_CONTROL}, OBTAIN_EXTERNAL: {"queue": QUEUE_EXTERNAL},
                        REGISTER_ACME_ACCOUNT: {"queue": QUEUE_EXTERNAL}, VACUUM: {"queue": QUEUE_CONTROL}},
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 3600},
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }
