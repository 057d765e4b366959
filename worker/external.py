"""External CAs (DESIGN.md 9): a worker obtains a request's certificate from another CA, once per request.

``obtain`` is the plain function behind the ``kms.obtain_external`` task (queue ``kms.external``). Why an
external CA is never asked twice for one request (invariant 10):

- **One driver per request.** The worker holds a PostgreSQL session advisory lock on the request while
  it works on it; a second delivery, a retry or the reconciler's re-send that arrives meanwhile finds the
  lock taken and does nothing. A worker that dies (SIGKILL included) loses its connection and so its
  lock: the next attempt may then take the request at once, lease or not.
- **The order is written down before it is used.** The order row (with the CSR it will be finalized
  with, and a server-made key sealed for the certificate to come) is committed before the order is
  placed; the order's URL is committed as soon as the upstream answers newOrder, before the order is
  polled. Every later attempt resumes that URL (``AcmeIssuer.obtain``) and never places another. An
  upstream that has forgotten the order (it answers 404) fails the request with that reason rather than
  being asked again.
- **Only external requests come here**, and only here: the registration authority marks them
  (``certificate_requests.issuer_kind``) and the internal claims skip them.

The request is validated twice (invariant 6): re-evaluated here against the profile, policy and CA of the
moment before anything is sent upstream. A transient upstream failure (unreachable, 5xx, rate limited)
gives the claim back and schedules a retry with exponential backoff and jitter, never sooner than the
upstream's ``Retry-After``; after ``external_max_attempts`` of them, or at once on the upstream's final
no, the request fails with the upstream's own reason.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shared.config import Settings
from shared.db import audit
from shared.db import authorities as ca_db
from shared.db import external as db
from shared.db import requests as requests_db
from shared.db import revocation as revocation_db
from shared.db.authorities import Authority
from shared.db.external import ACCOUNT_TABLE, AcmeAccount
from shared.db.requests import CertificateRow, RequestRow
from shared.errors import FieldError, KmsError, PolicyViolation
from shared.pki import builder as x509_builder
from shared.pki.csr import build_csr
from shared.pki.keys import algorithm_of_public_key, generate_private_key, load_private_key_der, private_key_to_der
from shared.pki.names import subject_alternative_name, subject_name
from shared.policy.attributes import IssueAttributes
from shared.policy.evaluation import evaluate_request
from shared.profiles import load_issuing_context
from shared.renewal import stamp as renewal_stamp
from shared.secrets.envelope import EnvelopeError
from worker.acme_upstream import AccountUnknown, AcmeIssuer, AcmeSettings, register_account
from worker.dns_providers import DnsProvider, DnsProviderError, provider_from
from worker.issuance import CERT_TABLE, TRANSIENT_DB
from worker.issuers import UpstreamRefused, UpstreamTransient

__all__ = ["Outcome", "UpstreamTransient", "backoff", "obtain", "register_acme_account"]
from worker.runtime import Runtime
from worker.upstream_budget import UpstreamBudget, budget_redis_url

log = logging.getLogger("kms.worker")
SECRETS_TABLE = ACCOUNT_TABLE + ".secrets"


@dataclass(frozen=True)
class Outcome:
    """What one attempt did: issued, failed, skipped (another worker has it, or it is final), or retry
    (after ``delay`` seconds: the task schedules it)."""

    status: str
    delay: float = 0.0


def budget_for(rt: Runtime, ca_id: UUID) -> UpstreamBudget:
    s = rt.settings
    return UpstreamBudget(budget_redis_url(s), ca_id, s.external_requests_per_second, s.external_burst)


def backoff(settings: Settings, failures: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter ("equal jitter": half fixed, half random), never below the
    upstream's Retry-After."""
    ceiling = min(settings.external_backoff_max_seconds,
                  settings.external_backoff_base_seconds * 2.0 ** float(failures - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return float(max(delay, retry_after or 0.0))


async def open_secrets(rt: Runtime, conn: asyncpg.Connection, account: AcmeAccount) -> dict[str, str]:
    """The secrets the CA's creator gave (EAB HMAC key, TSIG secret), sealed under the CA root key once its
    account is registered (under the root key before that: the API sealed them)."""
    if account.encrypted_secrets is None:
        return {}
    ring = rt.ca_keyring if account.secrets_sealed_by == rt.ca_keyring.purpose.name else rt.keyring
    raw = await ring.open(conn, account.project_id, account.encrypted_secrets, table=SECRETS_TABLE,
                          row_id=account.ca_id)
    secrets: dict[str, str] = json.loads(raw)
    return secrets


# -- the account of an ACME CA -------------------------------------------------------------------------

async def register_acme_account(rt: Runtime, ca_id: UUID) -> str:
    """Make the account key of a pending ACME CA (sealed under the CA root key, committed first), register
    it upstream, and activate the CA. Returns the CA's status; raises UpstreamTransient to be retried."""
    pool = await rt.pool()
    async with pool.acquire() as conn:
        attempts = await ca_db.count_attempt(conn, ca_id)
        found = await db.get_acme_ca(conn, ca_id)
        if found is None or found[0].status != "pending":
            return "not-pending"
        ca, account = found
        try:
            if attempts > rt.settings.external_max_attempts:
                raise UpstreamRefused(f"gave up after {attempts - 1} attempts; last error: {ca.error_message}")
            if account.encrypted_account_key is None:
                key = generate_private_key("EC_prime256v1")
                sealed = await rt.ca_keyring.seal(conn, ca.project_id, private_key_to_der(key), table=ACCOUNT_TABLE,
                                                  row_id=ca_id)
                # Committed before the account is registered: every retry registers this same key.
                await db.store_account_key(conn, ca_id, sealed)
                found = await db.get_acme_ca(conn, ca_id)
                assert found is not None
                ca, account = found
            assert account.encrypted_account_key is not None
            key = load_private_key_der(await rt.ca_keyring.open(
                conn, ca.project_id, account.encrypted_account_key, table=ACCOUNT_TABLE, row_id=ca_id))
            secrets = await open_secrets(rt, conn, account)
            budget = budget_for(rt, ca_id)
            try:
                import asyncio

                account_url = await asyncio.to_thread(
                    register_account, directory_url=account.directory_url, email=account.account_email,
                    account_key=key, budget=budget, ca_bundle=account.ca_bundle, eab_kid=account.eab_kid,
                    eab_hmac_key=secrets.get("eabHmacKey"), timeout=rt.settings.external_http_timeout_seconds)
            finally:
                budget.close()
        except UpstreamTransient as exc:
            await conn.execute("UPDATE certificate_authorities SET error_message = $2 WHERE id = $1", ca_id, str(exc))
            raise
        except (UpstreamRefused, EnvelopeError) as exc:
            message = f"the ACME account could not be registered: {exc}"
            async with conn.transaction():
                await ca_db.fail(conn, ca_id, message)
                await audit.record(conn, project_id=ca.project_id, actor="worker", action="ca.create.failed",
                                   subject_type="ca", subject_id=str(ca_id), details={"error": message})
                await ca_db.notify(conn, f"ca:{ca_id}")
            return "failed"
        async with conn.transaction():
            if await db.lock_pending_acme(conn, ca_id) is None:
                return "not-pending"
            if account.encrypted_secrets is not None and account.secrets_sealed_by != rt.ca_keyring.purpose.name:
                # Out of the API's reach from now on (the API sealed them under the root key).
                blob = await rt.ca_keyring.seal(conn, ca.project_id, json.dumps(secrets).encode(),
                                                table=SECRETS_TABLE, row_id=ca_id)
                await db.reseal_secrets(conn, ca_id, blob, rt.ca_keyring.purpose.name)
            await db.activate_acme(conn, ca_id, account_url)
            await audit.record(conn, project_id=ca.project_id, actor="worker", action="ca.acme.account",
                               subject_type="ca", subject_id=str(ca_id),
                               details={"directoryUrl": account.directory_url, "accountUrl": account_url})
            await ca_db.notify(conn, f"ca:{ca_id}")
    log.info("ACME account registered", extra={"ca_id": str(ca_id), "account_url": account_url})
    return "active"


# -- a request ------------------------------------------------------------------------------------------

class _Journal:
    def __init__(self, conn: asyncpg.Connection, request_id: UUID, ca_id: UUID) -> None:
        self.conn = conn
        self.request_id = request_id
        self.ca_id = ca_id

    async def placing(self) -> None:
        await db.mark_placing(self.conn, self.request_id)

    async def known_orders(self) -> set[str]:
        return set(await db.order_urls(self.conn, self.ca_id))

    async def placed(self, order_url: str) -> None:
        await db.store_order_url(self.conn, self.request_id, order_url)  # one statement: committed on return

    async def publish_http01(self, token: str, key_authorization: str) -> None:
        await db.put_http01_answer(self.conn, token, key_authorization, self.request_id, 3600.0)


class _Final(Exception):
    """The request cannot be obtained as asked (our own check, before or after the upstream)."""


async def obtain(rt: Runtime, request_id: UUID) -> Outcome:
    pool = await rt.pool()
    async with pool.acquire() as conn:
        if not await db.try_lock_request(conn, request_id):
            return Outcome("skipped")  # another worker drives this request's order right now
        try:
            return await _obtain_locked(rt, conn, request_id)
        finally:
            if not conn.is_closed():
                try:
                    await db.unlock_request(conn, request_id)
                except Exception:  # noqa: S110 - a lost connection has dropped the lock already
                    pass


async def _obtain_locked(rt: Runtime, conn: asyncpg.Connection, request_id: UUID) -> Outcome:
    token = uuid.uuid4()
    req = await db.claim(conn, request_id, token, float(rt.settings.lease_seconds))
    if req is None:
        return Outcome("skipped")
    try:
        return await _work(rt, conn, req, token)
    except TRANSIENT_DB as exc:
        try:
            if not conn.is_closed():
                await requests_db.release(conn, [req.id], token, f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: S110 - the lease and the reconciler cover a lost connection
            pass
        raise


async def _fail(conn: asyncpg.Connection, req: RequestRow, token: UUID, message: str) -> Outcome:
    async with conn.transaction():
        await requests_db.fail_many(conn, [(req.id, req.project_id, message)], token=token)
        await db.set_order_state(conn, req.id, "failed")
        await db.drop_http01_answers(conn, req.id)
    log.info("external request failed", extra={"certificate_request_id": str(req.id), "error": message})
    return Outcome("failed")


async def _work(rt: Runtime, conn: asyncpg.Connection, req: RequestRow, token: UUID) -> Outcome:
    try:
        ca, account, template_key_algorithm, api_config = await _validate(conn, req)
    except (KmsError, _Final) as exc:
        return await _fail(conn, req, token, str(exc))
    order = await db.start_order(conn, request_id=req.id, ca_id=ca.id, project_id=req.project_id,
                                 certificate_id=uuid.uuid4())
    if order.csr_pem is None:
        await _prepare_csr(rt, conn, req, order.certificate_id, template_key_algorithm)
        order = await db.get_order(conn, req.id) or order
    assert order.csr_pem is not None
    budget = budget_for(rt, ca.id)
    try:
        assert account.encrypted_account_key is not None and account.account_url is not None
        key = load_private_key_der(await rt.ca_keyring.open(conn, ca.project_id, account.encrypted_account_key,
                                                            table=ACCOUNT_TABLE, row_id=ca.id))
        secrets = await open_secrets(rt, conn, account)
        dns: DnsProvider | None = None
        if account.dns_provider:
            dns = provider_from(account.dns_provider, secrets.get("tsigSecret"))
        s = rt.settings
        issuer = AcmeIssuer(name=ca.name, directory_url=account.directory_url, account_url=account.account_url,
                            account_key=key, budget=budget, ca_bundle=account.ca_bundle, dns=dns,
                            settings=AcmeSettings(s.external_http_timeout_seconds, s.external_poll_seconds,
                                                  s.external_dns_propagation_seconds))
        signed = await issuer.obtain(order.csr_pem, order.order_url, _Journal(conn, req.id, ca.id),
                                     maybe_placed=order.state == "placing")
    except AccountUnknown as exc:
        try:
            await _register_again(rt, conn, ca, account, key, secrets, budget)
        except UpstreamRefused as refused:
            return await _fail(conn, req, token, f"the external CA {ca.name!r} refused: {refused}")
        except UpstreamTransient as again:
            return await _retry_later(rt, conn, req, token, ca, again)
        return await _retry_later(rt, conn, req, token, ca, UpstreamTransient(str(exc), 0.0))
    except UpstreamRefused as exc:
        return await _fail(conn, req, token, f"the external CA {ca.name!r} refused: {exc}")
    except (EnvelopeError, DnsProviderError) as exc:
        return await _fail(conn, req, token, f"the external CA {ca.name!r} cannot be used: {exc}")
    except UpstreamTransient as exc:
        return await _retry_later(rt, conn, req, token, ca, exc)
    finally:
        budget.close()
    order = await db.get_order(conn, req.id) or order
    return await _store(rt, conn, req, token, ca, order, signed, api_config)


async def _register_again(rt: Runtime, conn: asyncpg.Connection, ca: Authority, account: AcmeAccount, key: Any,
                          secrets: dict[str, str], budget: UpstreamBudget) -> None:
    """The upstream forgot the CA's account: register the same key again and record the account's new URL."""
    import asyncio

    url = await asyncio.to_thread(
        register_account, directory_url=account.directory_url, email=account.account_email, account_key=key,
        budget=budget, ca_bundle=account.ca_bundle, eab_kid=account.eab_kid, eab_hmac_key=secrets.get("eabHmacKey"),
        timeout=rt.settings.external_http_timeout_seconds)
    await db.set_account_url(conn, ca.id, url)
    log.warning("ACME account registered again", extra={"ca_id": str(ca.id), "account_url": url})


async def _validate(conn: asyncpg.Connection, req: RequestRow
                    ) -> tuple[Authority, AcmeAccount, str, dict[str, Any] | None]:
    """Validate twice (DESIGN.md 4.6): the profile, policy and CA in force now, before the upstream is asked."""
    ctx = await load_issuing_context(conn, req.profile_id)
    if ctx is None:
        raise PolicyViolation([FieldError("profileId", "the certificate profile no longer exists")])
    if ctx.ca is None or ctx.ca.type != "acme":
        raise _Final("the profile's CA is no longer an external CA; request the certificate again")
    if ctx.ca.status != "active":
        raise _Final(f"the profile's CA is {ctx.ca.status}; it obtains nothing")
    if req.renewal_of is not None and await revocation_db.is_revoked(conn, req.renewal_of):
        raise PolicyViolation([FieldError("certificateId", "the certificate was revoked; a revoked certificate "
                                                           "is never renewed")])
    attributes = IssueAttributes.model_validate(req.attributes) if req.attributes is not None else None
    template = evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes,
                                csr_pem=req.csr_pem, now=datetime.now(UTC))
    found = await db.get_acme_ca(conn, ctx.ca.id)
    if found is None or found[1].account_url is None or found[1].encrypted_account_key is None:
        raise _Final("the external CA has no registered account")
    api_config = ctx.profile.api_config if ctx.profile.enrollment_type == "api" else None
    return found[0], found[1], template.key_algorithm, api_config


async def _prepare_csr(rt: Runtime, conn: asyncpg.Connection, req: RequestRow, certificate_id: UUID,
                       key_algorithm: str) -> None:
    """The CSR the order is finalized with, committed before the order is placed: the caller's own, or one
    for a key made here (sealed bound to the certificate to come, as an issued key is)."""
    if req.csr_pem is not None:
        csr = x509.load_pem_x509_csr(req.csr_pem.encode())
        await db.store_csr(conn, req.id, req.csr_pem, None, algorithm_of_public_key(csr.public_key()))
        return
    attributes = IssueAttributes.model_validate(req.attributes) if req.attributes is not None else None
    ctx = await load_issuing_context(conn, req.profile_id)
    assert ctx is not None
    template = evaluate_request(rules=ctx.rules, defaults=ctx.defaults, attributes=attributes, csr_pem=None,
                                now=datetime.now(UTC))
    key = generate_private_key(key_algorithm)
    csr_pem = build_csr(subject_name(template.subject), subject_alternative_name(template.alt_names), key)
    sealed = await rt.keyring.seal(conn, req.project_id, private_key_to_der(key), table=CERT_TABLE,
                                   row_id=certificate_id)
    await db.store_csr(conn, req.id, csr_pem, sealed, key_algorithm)


async def _retry_later(rt: Runtime, conn: asyncpg.Connection, req: RequestRow, token: UUID, ca: Authority,
                       exc: UpstreamTransient) -> Outcome:
    failures = await db.upstream_attempts(conn, req.id) + 1
    if failures >= rt.settings.external_max_attempts:
        return await _fail(conn, req, token, f"the external CA {ca.name!r} failed {failures} attempts; "
                                             f"last error: {exc}")
    delay = backoff(rt.settings, failures, exc.retry_after)
    await db.retry_later(conn, req.id, token, str(exc), delay)
    log.info("external request retried later", extra={"certificate_request_id": str(req.id), "error": str(exc),
                                                       "delay": round(delay, 2), "failures": failures})
    return Outcome("retry", delay)


async def _store(rt: Runtime, conn: asyncpg.Connection, req: RequestRow, token: UUID, ca: Authority,
                 order: db.ExternalOrder, signed: Any, api_config: dict[str, Any] | None) -> Outcome:
    certificate: x509.Certificate = signed.certificate
    chain: list[x509.Certificate] = list(signed.chain)
    csr = x509.load_pem_x509_csr((order.csr_pem or "").encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != csr.public_key().public_bytes(*spki):
        return await _fail(conn, req, token, f"the external CA {ca.name!r} returned a certificate for another key")
    served = chain[:-1] if req.remove_roots and chain and chain[-1].issuer == chain[-1].subject else chain
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    server_key = order.encrypted_private_key is not None
    renewal = renewal_stamp(api_config, server_key=server_key, not_before=not_before, not_after=not_after)
    serial_hex = format(signed.serial, "x")
    row = CertificateRow(
        id=order.certificate_id, project_id=req.project_id, profile_id=req.profile_id, request_id=req.id, ca_id=ca.id,
        serial_number=serial_hex, common_name=str(cn[0].value) if cn else None,
        key_algorithm=order.key_algorithm or algorithm_of_public_key(certificate.public_key()),
        certificate_pem=x509_builder.to_pem(certificate), chain_pem=x509_builder.chain_pem(served),
        issuing_ca_pem=x509_builder.to_pem(chain[0]) if chain else None, not_before=not_before, not_after=not_after,
        encrypted_private_key=order.encrypted_private_key, renewed_from_id=req.renewal_of, renewed_by_id=None,
        created_at=datetime.now(UTC), auto_renew=renewal.auto_renew, renew_before_days=renewal.renew_before_days,
        renewal_due_at=renewal.renewal_due_at)
    async with conn.transaction():
        stored = await requests_db.store_issued(
            conn, row, token=token, serial_issuer=ca.id,
            audit_details={"serial": serial_hex, "request": str(req.id), "issuer": str(ca.id),
                           "external": True, "orderUrl": order.order_url})
        if stored:
            await db.set_order_state(conn, req.id, "done")
            await db.drop_http01_answers(conn, req.id)
    if not stored:
        return Outcome("skipped")
    log.info("external certificate stored", extra={"certificate_request_id": str(req.id), "serial": serial_hex,
                                                   "order_url": order.order_url})
    return Outcome("issued")
