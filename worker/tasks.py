"""Celery tasks: thin wrappers around plain functions in ``worker/``, taking ids only.

Transient failures (database or network) retry with exponential backoff; anything the request got
wrong ends it ``failed`` inside the function, so a task never retries a hopeless request.
"""

from __future__ import annotations

from uuid import UUID

import redis

from shared import tasks as names
from shared.db.pool import dedicated
from worker import acme_validation, authorities, external, issuance, maintenance, ocsp, reconciler, renewal, revocation
from worker.app import app
from worker.ca_keys import CaKeyCache
from worker.runtime import runtime

TRANSIENT = issuance.TRANSIENT_DB

_ca_keys: CaKeyCache | None = None


def ca_keys() -> CaKeyCache:
    global _ca_keys
    if _ca_keys is None:
        rt = runtime()
        _ca_keys = CaKeyCache(rt.ca_keyring, rt.settings.ca_key_cache_seconds)
    return _ca_keys


def _backoff(retries: int) -> float:
    return float(min(2 ** retries, 30))


@app.task(name=names.CREATE_CA, bind=True, max_retries=8)
def create_ca(self, ca_id: str) -> str:  # type: ignore[no-untyped-def]
    rt = runtime()
    try:
        return rt.run(authorities.create_ca(rt, ca_keys(), UUID(ca_id)))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@app.task(name=names.ISSUE_CERTIFICATE, bind=True, max_retries=5)
def issue_certificate(self, request_id: str) -> str:  # type: ignore[no-untyped-def]
    rt = runtime()
    try:
        return rt.run(issuance.issue(rt, ca_keys(), UUID(request_id)))
    except TRANSIENT as exc:
        # After the last retry the request stays pending; the reconciler re-sends it, and gives up
        # with a reason after max_attempts claims.
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@app.task(name=names.ISSUE_BATCH_CHUNK, bind=True, max_retries=5)
def issue_chunk(self, request_ids: list[str], batch_id: str | None = None,  # type: ignore[no-untyped-def]
                ready: bool = False) -> dict[str, int]:
    """A chunk of requests (a batch's, the reconciler's re-sends, or with ``ready`` the API's doorbell,
    which also takes every other ready single request): one message, one transaction per round."""
    rt = runtime()
    ids = [UUID(r) for r in request_ids]
    try:
        if not ready:
            return rt.run(issuance.issue_many(rt, ca_keys(), ids, batch_id=UUID(batch_id) if batch_id else None))
        _answer_doorbell(rt.settings.broker_url)
        # A full claim: more requests are ready than one chunk takes; the next chunk, on another process.
        return rt.run(issuance.issue_ready(rt, ca_keys(), ids,
                                           ring_again=lambda: issue_chunk.apply_async(args=[[], None, True])))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


_doorbell: redis.Redis | None = None


def _answer_doorbell(broker_url: str) -> None:
    """Clear the doorbell before claiming: a request the API adds after this rings again, and one added
    before is claimed by this task (see shared.tasks.DOORBELL_KEY). Best effort: if Redis cannot be reached
    the key expires by itself, and this task still claims what is ready."""
    global _doorbell
    if not names.is_redis(broker_url):
        return
    try:
        if _doorbell is None:
            _doorbell = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)
        _doorbell.delete(names.DOORBELL_KEY)
    except redis.RedisError:
        pass


@app.task(name=names.RECONCILE, ignore_result=True)
def reconcile() -> dict[str, int]:
    rt = runtime()
    result = rt.run(reconciler.reconcile(
        rt,
        # Re-sent work is the oldest there is: it rides the control queue, served in turn with the others,
        # instead of joining the back of a signing backlog it may already have been lost from.
        send_requests=lambda ids: issue_chunk.apply_async(args=[ids], queue=names.QUEUE_CONTROL),
        send_ca=lambda cid: create_ca.apply_async(args=[cid], queue=names.QUEUE_CONTROL),
        # External requests and ACME accounts go to their own tasks (kms.external), never to the signers.
        send_external=lambda rid: obtain_external.apply_async(args=[rid]),
        send_acme_ca=lambda cid: register_acme_account.apply_async(args=[cid]),
    ))
    return {"requeued": result.requeued, "gaveUp": result.gave_up, "casRequeued": result.cas_requeued}


@app.task(name=names.RENEW_DUE, ignore_result=True)
def renew_due() -> dict[str, int]:
    """Server-driven renewal: register the renewal of every certificate due (see worker.renewal)."""
    rt = runtime()
    result = rt.run(renewal.schedule_renewals(rt, send_requests=lambda ids: issue_chunk.apply_async(args=[ids]),
                                              send_external=lambda rid: obtain_external.apply_async(args=[rid])))
    return {"scheduled": result.scheduled, "refused": result.refused}


@app.task(name=names.SIGN_CRL, bind=True, max_retries=8)
def sign_crl(self, ca_id: str) -> str:  # type: ignore[no-untyped-def]
    """Re-sign a CA's CRL after a revocation: coalesced, the task signs nothing when a CRL already
    covers every revocation (so a burst of revocations shares one CRL)."""
    rt = runtime()
    try:
        return rt.run(revocation.sign_crl(rt, ca_keys(), UUID(ca_id)))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@app.task(name=names.REFRESH_CRLS, ignore_result=True)
def refresh_crls() -> int:
    rt = runtime()
    return rt.run(revocation.refresh_due(rt, ca_keys()))


@app.task(name=names.ACME_VALIDATE, bind=True, max_retries=None)
def acme_validate(self, challenge_id: str) -> str:  # type: ignore[no-untyped-def]
    """One try at an ACME challenge (worker.acme_validation); tries again later while its bounded total
    time remains, so the retries end by themselves."""
    rt = runtime()
    try:
        outcome = rt.run(acme_validation.validate(rt, UUID(challenge_id)))
    except TRANSIENT as exc:
        if self.request.retries >= 50:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if outcome.status == "retry":
        raise self.retry(countdown=rt.settings.acme_validation_retry_seconds)
    return outcome.status


@app.task(name=names.ACME_CLEANUP, ignore_result=True)
def acme_cleanup() -> dict[str, int]:
    """Remove expired ACME nonces, orders and authorizations; re-ring stalled validations."""
    rt = runtime()
    done = rt.run(acme_validation.clean_up(
        rt, resend=lambda cid: acme_validate.apply_async(args=[cid], queue=names.QUEUE_EXTERNAL)))
    return {"nonces": done.nonces, "orders": done.orders, "authorizations": done.authorizations,
            "resent": done.resent}


@app.task(name=names.VACUUM, ignore_result=True)
def vacuum() -> dict[str, object]:
    """What autovacuum would do, when the server's is off (worker.maintenance); else nothing."""
    rt = runtime()

    async def run() -> maintenance.Maintained:
        # A connection of its own, closed after: the memory its backend took for ANALYZE's sample rows
        # (tens of MB of PEM text) goes with it, instead of staying with a pooled connection for good.
        async with dedicated(rt.settings.database_url, connect_timeout=10) as conn:
            return await maintenance.vacuum_if_needed(conn)

    done = rt.run(run())
    return {"autovacuum": done.autovacuum, "vacuumed": done.vacuumed, "analyzed": done.analyzed}


@app.task(name=names.ISSUE_OCSP_RESPONDER, bind=True, max_retries=8)
def issue_ocsp_responder(self, ca_id: str) -> str:  # type: ignore[no-untyped-def]
    """A CA's delegated OCSP responder, asked for by an API that found none current."""
    rt = runtime()
    try:
        return rt.run(ocsp.issue_responder(rt, ca_keys(), UUID(ca_id)))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@app.task(name=names.REFRESH_OCSP_RESPONDERS, ignore_result=True)
def refresh_ocsp_responders() -> int:
    rt = runtime()
    return rt.run(ocsp.refresh_due(rt, ca_keys()))


@app.task(name=names.OBTAIN_EXTERNAL, bind=True, max_retries=5)
def obtain_external(self, request_id: str) -> str:  # type: ignore[no-untyped-def]
    """A request of an external CA: its one upstream order, placed or resumed (see worker.external). A
    transient upstream failure is retried by a new message after the backoff the function chose (the
    request row holds the count and the due time, so a lost message is re-sent by the reconciler)."""
    rt = runtime()
    try:
        outcome = rt.run(external.obtain(rt, UUID(request_id)))
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if outcome.status == "retry":
        obtain_external.apply_async(args=[request_id], countdown=outcome.delay)
    return outcome.status


@app.task(name=names.REGISTER_ACME_ACCOUNT, bind=True, max_retries=12)
def register_acme_account(self, ca_id: str) -> str:  # type: ignore[no-untyped-def]
    """An ACME CA's account: key made and sealed here, registered upstream (see worker.external)."""
    rt = runtime()
    try:
        return rt.run(external.register_acme_account(rt, UUID(ca_id)))
    except external.UpstreamTransient as exc:
        countdown = external.backoff(rt.settings, self.request.retries + 1, exc.retry_after)
        raise self.retry(exc=exc, countdown=countdown) from exc
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
