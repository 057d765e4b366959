"""External CAs (DESIGN.md 9): ACME CAs and their accounts, upstream orders, http-01 answers. Every SQL
statement of the external path; ``shared.db.requests`` holds the request rows they share with the rest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor
from shared.db.authorities import _COLS as CA_COLS
from shared.db.authorities import Authority, _authority
from shared.db.requests import _REQ_COLS, RequestRow, StaleRequest, _request

# The key of the session advisory lock a worker holds while it drives a request's upstream order: one
# driver per request, released by PostgreSQL itself when the worker's connection dies (a SIGKILL included).
LOCK_SEED = 7013
ACCOUNT_TABLE = "upstream_acme_accounts"


@dataclass(frozen=True)
class AcmeAccount:
    ca_id: UUID
    project_id: UUID
    directory_url: str
    account_email: str
    eab_kid: str | None
    dns_provider: dict[str, Any] | None
    ca_bundle: str | None
    encrypted_secrets: bytes | None
    secrets_sealed_by: str
    encrypted_account_key: bytes | None
    account_url: str | None


_ACCOUNT_COLS = ", ".join(AcmeAccount.__dataclass_fields__)


def _account(row: Any, prefix: str = "") -> AcmeAccount:
    return AcmeAccount(**{k: row[prefix + k] for k in AcmeAccount.__dataclass_fields__})


async def insert_acme_ca(conn: Executor, *, ca_id: UUID, project_id: UUID, name: str, status_after_creation: str,
                         directory_url: str, account_email: str, eab_kid: str | None,
                         dns_provider: dict[str, Any] | None, ca_bundle: str | None,
                         encrypted_secrets: bytes | None) -> Authority | None:
    """The pending CA row and its account row (the caller holds a transaction); None when the name is taken."""
    row = await conn.fetchrow(
        f"INSERT INTO certificate_authorities (id, project_id, name, type, subject, key_algorithm,"
        f" status_after_creation) VALUES ($1, $2, $3, 'acme', '{{}}'::jsonb, 'EC_prime256v1', $4)"
        f" ON CONFLICT (project_id, name) DO NOTHING RETURNING {CA_COLS}",
        ca_id, project_id, name, status_after_creation)
    if row is None:
        return None
    await conn.execute(
        "INSERT INTO upstream_acme_accounts (ca_id, project_id, directory_url, account_email, eab_kid, dns_provider,"
        " ca_bundle, encrypted_secrets) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ca_id, project_id, directory_url, account_email, eab_kid, dns_provider, ca_bundle, encrypted_secrets)
    return _authority(row)


async def get_acme_ca(conn: Executor, ca_id: UUID, project_id: UUID | None = None
                      ) -> tuple[Authority, AcmeAccount] | None:
    acc = ", ".join(f"x.{c} AS x_{c}" for c in AcmeAccount.__dataclass_fields__)
    cas = ", ".join(f"a.{c.strip()}" for c in CA_COLS.split(","))
    row = await conn.fetchrow(
        f"SELECT {cas}, {acc} FROM certificate_authorities a JOIN upstream_acme_accounts x ON x.ca_id = a.id"
        f" WHERE a.id = $1 AND a.type = 'acme' AND ($2::uuid IS NULL OR a.project_id = $2)", ca_id, project_id)
    return None if row is None else (_authority(row), _account(row, "x_"))


async def list_acme_cas(conn: Executor, project_id: UUID) -> list[tuple[Authority, AcmeAccount]]:
    acc = ", ".join(f"x.{c} AS x_{c}" for c in AcmeAccount.__dataclass_fields__)
    cas = ", ".join(f"a.{c.strip()}" for c in CA_COLS.split(","))
    rows = await conn.fetch(
        f"SELECT {cas}, {acc} FROM certificate_authorities a JOIN upstream_acme_accounts x ON x.ca_id = a.id"
        f" WHERE a.project_id = $1 AND a.type = 'acme' ORDER BY a.created_at, a.id", project_id)
    return [(_authority(r), _account(r, "x_")) for r in rows]


async def lock_pending_acme(conn: Executor, ca_id: UUID) -> tuple[Authority, AcmeAccount] | None:
    """Lock a pending ACME CA for the worker registering its account; None when it is not pending."""
    found = await conn.fetchrow(
        "SELECT 1 FROM certificate_authorities WHERE id = $1 AND type = 'acme' AND status = 'pending' FOR UPDATE",
        ca_id)
    return None if found is None else await get_acme_ca(conn, ca_id)


async def store_account_key(conn: Executor, ca_id: UUID, encrypted_key: bytes) -> None:
    """The account key, committed before the account is registered, so every retry registers the same key
    (an ACME server answers a known key with its existing account: one account per CA)."""
    await conn.execute("UPDATE upstream_acme_accounts SET encrypted_account_key = $2, updated_at = now()"
                       " WHERE ca_id = $1 AND encrypted_account_key IS NULL", ca_id, encrypted_key)


async def reseal_secrets(conn: Executor, ca_id: UUID, encrypted_secrets: bytes, sealed_by: str) -> None:
    await conn.execute("UPDATE upstream_acme_accounts SET encrypted_secrets = $2, secrets_sealed_by = $3,"
                       " updated_at = now() WHERE ca_id = $1", ca_id, encrypted_secrets, sealed_by)


async def activate_acme(conn: Executor, ca_id: UUID, account_url: str) -> None:
    await conn.execute("UPDATE upstream_acme_accounts SET account_url = $2, updated_at = now() WHERE ca_id = $1",
                       ca_id, account_url)
    await conn.execute("UPDATE certificate_authorities SET status = status_after_creation, error_message = NULL,"
                       " updated_at = now() WHERE id = $1 AND status = 'pending'", ca_id)


async def set_account_url(conn: Executor, ca_id: UUID, account_url: str) -> None:
    await conn.execute("UPDATE upstream_acme_accounts SET account_url = $2, updated_at = now() WHERE ca_id = $1",
                       ca_id, account_url)


async def stale_pending_acme(conn: Executor, older_than_seconds: float, limit: int = 500) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT id FROM certificate_authorities WHERE status = 'pending' AND type = 'acme'"
        " AND updated_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
        older_than_seconds, limit)
    return [r["id"] for r in rows]


# -- requests on the external path ---------------------------------------------------------------------

async def try_lock_request(conn: Executor, request_id: UUID) -> bool:
    """The session advisory lock of one request's upstream order (see LOCK_SEED); False when another
    connection holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1::text, $2))",
                                    str(request_id), LOCK_SEED))


async def unlock_request(conn: Executor, request_id: UUID) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1::text, $2))", str(request_id), LOCK_SEED)


async def claim(conn: Executor, request_id: UUID, token: UUID, lease_seconds: float) -> RequestRow | None:
    """pending -> processing for the caller, who holds the request's advisory lock: a ``processing`` row
    whose lock is free was left by a worker that died, and is taken at once. A request whose retry is not
    due yet (an early duplicate message) is left alone."""
    row = await conn.fetchrow(
        f"UPDATE certificate_requests r SET status = 'processing', claim_token = $2, attempts = attempts + 1,"
        f" lease_expires_at = now() + make_interval(secs => $3), updated_at = now()"
        f" WHERE id = $1 AND issuer_kind = 'external' AND status IN ('pending', 'processing')"
        f" AND NOT EXISTS (SELECT 1 FROM external_orders o WHERE o.request_id = r.id AND o.next_attempt_at > now())"
        f" RETURNING {_REQ_COLS}", request_id, token, lease_seconds)
    return None if row is None else _request(row)


async def retry_later(conn: Executor, request_id: UUID, token: UUID, error: str, delay_seconds: float) -> int:
    """A transient upstream failure: the claim is given back (it ended, so it does not count as a claim
    that never finished), the order row counts the failure and holds the request until its retry is due.
    Returns the failures counted so far."""
    await conn.execute(
        "UPDATE certificate_requests SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,"
        " attempts = greatest(attempts - 1, 0), last_error = $3, updated_at = now()"
        " WHERE id = $1 AND status = 'processing' AND claim_token = $2", request_id, token, error)
    counted: int = await conn.fetchval(
        "UPDATE external_orders SET upstream_attempts = upstream_attempts + 1, last_upstream_error = $2,"
        " next_attempt_at = now() + make_interval(secs => $3), updated_at = now() WHERE request_id = $1"
        " RETURNING upstream_attempts", request_id, error, delay_seconds)
    return counted


async def upstream_attempts(conn: Executor, request_id: UUID) -> int:
    return int(await conn.fetchval(
        "SELECT coalesce((SELECT upstream_attempts FROM external_orders WHERE request_id = $1), 0)", request_id))


async def stale_external(conn: Executor, older_than_seconds: float, limit: int) -> list[StaleRequest]:
    """External requests to send again: pending with no progress for a while and their retry due, or
    processing with nobody driving them (their worker died: its advisory lock is gone)."""
    rows = await conn.fetch(
        "SELECT r.id, r.attempts, r.last_error FROM certificate_requests r"
        " LEFT JOIN external_orders o ON o.request_id = r.id"
        " WHERE r.issuer_kind = 'external' AND r.status IN ('pending', 'processing')"
        " AND r.updated_at < now() - make_interval(secs => $1)"
        " AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())"
        " AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "   AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(r.id::text, $3))"
        " ORDER BY r.updated_at LIMIT $2", older_than_seconds, limit, LOCK_SEED)
    return [StaleRequest(r["id"], r["attempts"], r["last_error"]) for r in rows]


async def external_ids(conn: Executor, request_ids: list[UUID]) -> set[UUID]:
    """Which of ``request_ids`` go to an external CA."""
    rows = await conn.fetch("SELECT id FROM certificate_requests WHERE id = ANY($1::uuid[])"
                            " AND issuer_kind = 'external'", request_ids)
    return {r["id"] for r in rows}


# -- upstream orders ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExternalOrder:
    request_id: UUID
    ca_id: UUID
    project_id: UUID
    certificate_id: UUID
    csr_pem: str | None
    encrypted_private_key: bytes | None
    key_algorithm: str | None
    order_url: str | None
    state: str
    upstream_attempts: int
    next_attempt_at: datetime | None
    last_upstream_error: str | None


_ORDER_COLS = ", ".join(ExternalOrder.__dataclass_fields__)


def _order(row: Any) -> ExternalOrder:
    return ExternalOrder(**{k: row[k] for k in ExternalOrder.__dataclass_fields__})


async def get_order(conn: Executor, request_id: UUID) -> ExternalOrder | None:
    row = await conn.fetchrow(f"SELECT {_ORDER_COLS} FROM external_orders WHERE request_id = $1", request_id)
    return None if row is None else _order(row)


async def start_order(conn: Executor, *, request_id: UUID, ca_id: UUID, project_id: UUID, certificate_id: UUID
                      ) -> ExternalOrder:
    """The request's order row, written (state ``creating``) the first time the request is worked on."""
    await conn.execute(
        "INSERT INTO external_orders (request_id, ca_id, project_id, certificate_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (request_id) DO NOTHING", request_id, ca_id, project_id, certificate_id)
    found = await get_order(conn, request_id)
    assert found is not None
    return found


async def store_csr(conn: Executor, request_id: UUID, csr_pem: str, encrypted_private_key: bytes | None,
                    key_algorithm: str) -> None:
    """The CSR the order will be finalized with (and the server-made key it holds, sealed): kept before the
    order is placed, so a resumed order is finalized with the same CSR."""
    await conn.execute(
        "UPDATE external_orders SET csr_pem = $2, encrypted_private_key = $3, key_algorithm = $4, updated_at = now()"
        " WHERE request_id = $1 AND csr_pem IS NULL", request_id, csr_pem, encrypted_private_key, key_algorithm)


async def store_order_url(conn: Executor, request_id: UUID, order_url: str) -> None:
    """Committed right after the upstream answers newOrder and before anything else is asked of it."""
    await conn.execute("UPDATE external_orders SET order_url = $2, state = 'ordered', updated_at = now()"
                       " WHERE request_id = $1 AND order_url IS NULL", request_id, order_url)


async def mark_placing(conn: Executor, request_id: UUID) -> None:
    """Committed just before newOrder is sent: if its answer is lost (the upstream froze, the worker died),
    the next attempt knows an order may exist upstream without a recorded URL."""
    await conn.execute("UPDATE external_orders SET state = 'placing', updated_at = now()"
                       " WHERE request_id = $1 AND order_url IS NULL", request_id)


async def set_order_state(conn: Executor, request_id: UUID, state: str) -> None:
    await conn.execute("UPDATE external_orders SET state = $2, updated_at = now() WHERE request_id = $1",
                       request_id, state)


async def order_urls(conn: Executor, ca_id: UUID) -> list[str]:
    rows = await conn.fetch("SELECT order_url FROM external_orders WHERE ca_id = $1 AND order_url IS NOT NULL",
                            ca_id)
    return [r["order_url"] for r in rows]


# -- http-01 answers ---------------------------------------------------------------------------------

async def put_http01_answer(conn: Executor, token: str, key_authorization: str, request_id: UUID,
                            ttl_seconds: float) -> None:
    await conn.execute(
        "INSERT INTO acme_http01_answers (token, key_authorization, request_id, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
        " ON CONFLICT (token) DO UPDATE SET key_authorization = EXCLUDED.key_authorization,"
        " expires_at = EXCLUDED.expires_at", token, key_authorization, request_id, ttl_seconds)


async def http01_answer(conn: Executor, token: str) -> str | None:
    """The key authorization an upstream CA's http-01 check should find for ``token``, while it is current."""
    found: str | None = await conn.fetchval(
        "SELECT key_authorization FROM acme_http01_answers WHERE token = $1 AND expires_at > now()", token)
    return found


async def drop_http01_answers(conn: Executor, request_id: UUID) -> None:
    await conn.execute("DELETE FROM acme_http01_answers WHERE request_id = $1 OR expires_at < now()", request_id)
