"""ACME enrollment (RFC 8555, DESIGN.md 8): every SQL statement of the ACME server and its validator.

Scoping: every read the API makes names the profile (an account belongs to one profile's server) and,
below the account, the account: another account's or another profile's resource is simply not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Executor

# -- nonces -----------------------------------------------------------------------------------------


async def issue_nonce(conn: Executor, nonce: str, lifetime_seconds: int) -> None:
    await conn.execute("INSERT INTO acme_nonces (nonce, expires_at) VALUES ($1, now() + make_interval(secs => $2))",
                       nonce, lifetime_seconds)


async def redeem_nonce(conn: Executor, nonce: str) -> bool:
    """Single use: of any number of requests carrying one nonce, exactly one deletes it (the DELETE is
    atomic), and only an unexpired one counts."""
    return bool(await conn.fetchval(
        "WITH used AS (DELETE FROM acme_nonces WHERE nonce = $1 RETURNING expires_at)"
        " SELECT count(*) FROM used WHERE expires_at > now()", nonce))


# -- external account binding keys ------------------------------------------------------------------


async def eab_key(conn: Executor, profile_id: UUID) -> bytes | None:
    value: bytes | None = await conn.fetchval("SELECT sealed_key FROM acme_eab_keys WHERE profile_id = $1",
                                              profile_id)
    return value


async def insert_eab_key(conn: Executor, profile_id: UUID, project_id: UUID, sealed: bytes) -> bytes:
    """Store a profile's first EAB key; of two made at once the first stays, and both callers get it."""
    await conn.execute("INSERT INTO acme_eab_keys (profile_id, project_id, sealed_key) VALUES ($1, $2, $3)"
                       " ON CONFLICT (profile_id) DO NOTHING", profile_id, project_id, sealed)
    stored = await eab_key(conn, profile_id)
    assert stored is not None
    return stored


# -- accounts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    id: UUID
    profile_id: UUID
    project_id: UUID
    jwk: dict[str, Any]
    jwk_thumbprint: str
    status: str
    contact: list[str]
    eab_kid: str | None
    created_at: datetime


_ACCOUNT_COLS = ", ".join(AccountRow.__dataclass_fields__)


def _account(row: Any) -> AccountRow:
    return AccountRow(**{k: row[k] for k in AccountRow.__dataclass_fields__})


async def account_by_key(conn: Executor, profile_id: UUID, thumbprint: str) -> AccountRow | None:
    row = await conn.fetchrow(f"SELECT {_ACCOUNT_COLS} FROM acme_accounts WHERE profile_id = $1"
                              f" AND jwk_thumbprint = $2", profile_id, thumbprint)
    return None if row is None else _account(row)


async def get_account(conn: Executor, profile_id: UUID, account_id: UUID) -> AccountRow | None:
    row = await conn.fetchrow(f"SELECT {_ACCOUNT_COLS} FROM acme_accounts WHERE profile_id = $1 AND id = $2",
                              profile_id, account_id)
    return None if row is None else _account(row)


async def insert_account(conn: Executor, *, profile_id: UUID, project_id: UUID, jwk: dict[str, Any],
                         thumbprint: str, contact: list[str], eab_kid: str | None) -> AccountRow | None:
    """The new account; None when this key already has one on the profile (a concurrent new-account)."""
    row = await conn.fetchrow(
        f"WITH acct AS (INSERT INTO acme_accounts (profile_id, project_id, jwk, jwk_thumbprint, contact, eab_kid)"
        f" VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (profile_id, jwk_thumbprint) DO NOTHING"
        f" RETURNING {_ACCOUNT_COLS}),"
        f" audited AS (INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        f" SELECT project_id, 'acme-account:' || id::text, 'acme.account.create', 'acme_account', id::text,"
        f" jsonb_build_object('profileId', profile_id, 'eabKid', eab_kid) FROM acct RETURNING 1)"
        f" SELECT * FROM acct", profile_id, project_id, jwk, thumbprint, contact, eab_kid)
    return None if row is None else _account(row)


async def update_account(conn: Executor, account_id: UUID, *, contact: list[str] | None, deactivate: bool
                         ) -> AccountRow:
    row = await conn.fetchrow(
        f"UPDATE acme_accounts SET contact = coalesce($2, contact),"
        f" status = CASE WHEN $3 THEN 'deactivated' ELSE status END, updated_at = now()"
        f" WHERE id = $1 RETURNING {_ACCOUNT_COLS}", account_id, contact, deactivate)
    if deactivate:
        await _audit(conn, row["project_id"], account_id, "acme.account.deactivate", {})
    return _account(row)


async def change_key(conn: Executor, account_id: UUID, jwk: dict[str, Any], thumbprint: str) -> bool:
    """Roll the account over to a new key, audited in the same statement; False when that key already
    belongs to an account of the profile."""
    try:
        return bool(await conn.fetchval(
            "WITH upd AS (UPDATE acme_accounts SET jwk = $2, jwk_thumbprint = $3, updated_at = now()"
            " WHERE id = $1 RETURNING id, project_id),"
            " audited AS (INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
            " SELECT project_id, 'acme-account:' || id::text, 'acme.account.key_change', 'acme_account', id::text,"
            " jsonb_build_object('thumbprint', $3::text) FROM upd RETURNING 1)"
            " SELECT count(*) FROM upd", account_id, jwk, thumbprint))
    except asyncpg.UniqueViolationError:
        return False


async def _audit(conn: Executor, project_id: UUID, account_id: UUID, action: str, details: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, $3, 'acme_account', $4, $5)", project_id, f"acme-account:{account_id}", action,
        str(account_id), details)


# -- orders, authorizations, challenges -------------------------------------------------------------


@dataclass(frozen=True)
class OrderRow:
    id: UUID
    account_id: UUID
    profile_id: UUID
    status: str
    identifiers: list[dict[str, str]]
    expires_at: datetime
    error: dict[str, Any] | None
    request_id: UUID | None
    certificate_id: UUID | None
    created_at: datetime


@dataclass(frozen=True)
class AuthorizationRow:
    id: UUID
    order_id: UUID
    identifier_type: str
    identifier_value: str
    wildcard: bool
    status: str
    expires_at: datetime


@dataclass(frozen=True)
class ChallengeRow:
    id: UUID
    authorization_id: UUID
    type: str
    token: str
    status: str
    error: dict[str, Any] | None
    validated_at: datetime | None


_ORDER_COLS = ", ".join(OrderRow.__dataclass_fields__)
_AUTHZ_COLS = ", ".join(AuthorizationRow.__dataclass_fields__)
_CHALL_COLS = ", ".join(ChallengeRow.__dataclass_fields__)


def _row(kind: type[Any], row: Any, prefix: str = "") -> Any:
    return kind(**{k: row[prefix + k] for k in kind.__dataclass_fields__})


@dataclass(frozen=True)
class OrderCounts:
    open: int  # pending, ready or processing, unexpired
    recent: int  # created within the window
    window_frees_in: float  # seconds until the oldest order of the window leaves it


async def lock_order_counts(conn: Executor, account_id: UUID, window_seconds: int) -> OrderCounts:
    """The account's order counts, under a lock on the account row (the caller holds a transaction), so
    concurrent new-orders of one account are counted one after the other and a cap is never overrun."""
    await conn.execute("SELECT 1 FROM acme_accounts WHERE id = $1 FOR UPDATE", account_id)
    # A processing order whose request has ended counts as final, though it settles only when read.
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE o.expires_at > now() AND (o.status IN ('pending', 'ready')"
        "   OR (o.status = 'processing' AND r.status NOT IN ('issued', 'failed')))) AS open,"
        " count(*) FILTER (WHERE o.created_at > now() - make_interval(secs => $2)) AS recent,"
        " coalesce(extract(epoch FROM min(o.created_at) FILTER (WHERE o.created_at > now() - make_interval(secs => $2))"
        "   + make_interval(secs => $2) - now()), 0) AS frees_in"
        " FROM acme_orders o LEFT JOIN certificate_requests r ON r.id = o.request_id WHERE o.account_id = $1",
        account_id, window_seconds)
    return OrderCounts(row["open"], row["recent"], float(row["frees_in"]))


@dataclass(frozen=True)
class NewAuthorization:
    identifier_type: str  # dns | ip
    value: str  # without the "*." of a wildcard
    wildcard: bool
    challenge_types: tuple[str, ...]
    token: dict[str, str]  # challenge type -> token


async def insert_order(conn: Executor, *, account_id: UUID, profile_id: UUID, project_id: UUID,
                       identifiers: list[dict[str, str]], authorizations: list[NewAuthorization],
                       lifetime_seconds: int, pre_validated: bool) -> OrderRow:
    """A new order with an authorization per identifier and its challenges, in the caller's transaction.
    ``pre_validated`` (acmeConfig.skipDnsOwnershipVerification): authorizations are valid at once and
    the order is ready."""
    status = "ready" if pre_validated else "pending"
    row = await conn.fetchrow(
        f"INSERT INTO acme_orders (account_id, profile_id, status, identifiers, expires_at)"
        f" VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING {_ORDER_COLS}",
        account_id, profile_id, status, identifiers, lifetime_seconds)
    order: OrderRow = _row(OrderRow, row)
    authz_ids = await conn.fetch(
        "INSERT INTO acme_authorizations (order_id, identifier_type, identifier_value, wildcard, status, expires_at)"
        " SELECT $1, t, v, w, $5, $6 FROM unnest($2::text[], $3::text[], $4::boolean[]) AS x(t, v, w)"
        " RETURNING id, identifier_type, identifier_value, wildcard",
        order.id, [a.identifier_type for a in authorizations], [a.value for a in authorizations],
        [a.wildcard for a in authorizations], "valid" if pre_validated else "pending", order.expires_at)
    by_name = {(r["identifier_type"], r["identifier_value"], r["wildcard"]): r["id"] for r in authz_ids}
    ids, types, tokens = [], [], []
    for a in authorizations:
        for kind in a.challenge_types:
            ids.append(by_name[(a.identifier_type, a.value, a.wildcard)])
            types.append(kind)
            tokens.append(a.token[kind])
    await conn.execute(
        "INSERT INTO acme_challenges (authorization_id, type, token) SELECT * FROM unnest($1::uuid[], $2::text[],"
        " $3::text[])", ids, types, tokens)
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, 'acme.order.create', 'acme_order', $3, $4)", project_id, f"acme-account:{account_id}",
        str(order.id), {"identifiers": identifiers, "preValidated": pre_validated})
    return order


async def audit_order(conn: Executor, project_id: UUID, account_id: UUID, order_id: UUID, action: str,
                      details: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO audit_events (project_id, actor, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, $3, 'acme_order', $4, $5)", project_id, f"acme-account:{account_id}", action,
        str(order_id), details)


async def get_order(conn: Executor, account_id: UUID, order_id: UUID, *, for_update: bool = False
                    ) -> OrderRow | None:
    row = await conn.fetchrow(f"SELECT {_ORDER_COLS} FROM acme_orders WHERE id = $1 AND account_id = $2"
                              + (" FOR UPDATE" if for_update else ""), order_id, account_id)
    return None if row is None else _row(OrderRow, row)


async def account_orders(conn: Executor, account_id: UUID, limit: int = 1000) -> list[UUID]:
    """The account's orders not yet final, newest first (RFC 8555 7.1.2.1 lists pending orders)."""
    rows = await conn.fetch("SELECT id FROM acme_orders WHERE account_id = $1 AND expires_at > now()"
                            " AND status IN ('pending', 'ready', 'processing') ORDER BY created_at DESC LIMIT $2",
                            account_id, limit)
    return [r["id"] for r in rows]


async def order_authorizations(conn: Executor, order_id: UUID) -> list[AuthorizationRow]:
    rows = await conn.fetch(f"SELECT {_AUTHZ_COLS} FROM acme_authorizations WHERE order_id = $1 ORDER BY"
                            f" identifier_type, identifier_value, wildcard", order_id)
    return [_row(AuthorizationRow, r) for r in rows]


async def get_authorization(conn: Executor, account_id: UUID, authz_id: UUID
                            ) -> tuple[AuthorizationRow, list[ChallengeRow]] | None:
    authz_cols = ", ".join(f"a.{c}" for c in AuthorizationRow.__dataclass_fields__)
    row = await conn.fetchrow(f"SELECT {authz_cols} FROM acme_authorizations a JOIN acme_orders o"
                              f" ON o.id = a.order_id WHERE a.id = $1 AND o.account_id = $2", authz_id, account_id)
    if row is None:
        return None
    challenges = await conn.fetch(f"SELECT {_CHALL_COLS} FROM acme_challenges WHERE authorization_id = $1"
                                  f" ORDER BY type DESC", authz_id)
    return _row(AuthorizationRow, row), [_row(ChallengeRow, c) for c in challenges]


async def deactivate_authorization(conn: Executor, authz_id: UUID) -> None:
    """RFC 8555 7.5.2: the client gives up an authorization (pending or valid ones only)."""
    await conn.execute("UPDATE acme_authorizations SET status = 'deactivated' WHERE id = $1"
                       " AND status IN ('pending', 'valid')", authz_id)


async def get_challenge(conn: Executor, account_id: UUID, authz_id: UUID, challenge_id: UUID
                        ) -> ChallengeRow | None:
    chall_cols = ", ".join(f"c.{c}" for c in ChallengeRow.__dataclass_fields__)
    row = await conn.fetchrow(
        f"SELECT {chall_cols} FROM acme_challenges c JOIN acme_authorizations a ON a.id = c.authorization_id"
        f" JOIN acme_orders o ON o.id = a.order_id WHERE c.id = $1 AND a.id = $2 AND o.account_id = $3",
        challenge_id, authz_id, account_id)
    return None if row is None else _row(ChallengeRow, row)


async def start_challenge(conn: Executor, challenge_id: UUID) -> bool:
    """The client asks for validation: pending -> processing, once (a repeated POST changes nothing), and
    only while its authorization is pending and unexpired. True when this call started it."""
    return bool(await conn.fetchval(
        "WITH started AS (UPDATE acme_challenges c SET status = 'processing', started_at = now(), updated_at = now()"
        " FROM acme_authorizations a WHERE c.id = $1 AND a.id = c.authorization_id AND c.status = 'pending'"
        " AND a.status = 'pending' AND a.expires_at > now() RETURNING 1) SELECT count(*) FROM started",
        challenge_id))


async def expire_order(conn: Executor, order: OrderRow) -> OrderRow:
    """An order not final past its expiry reads as invalid (RFC 8555 7.1.6); nothing is ever issued for it."""
    row = await conn.fetchrow(
        f"UPDATE acme_orders SET status = 'invalid', updated_at = now(), error = $2"
        f" WHERE id = $1 AND status IN ('pending', 'ready') AND expires_at <= now() RETURNING {_ORDER_COLS}",
        order.id, {"type": "urn:ietf:params:acme:error:malformed", "detail": "the order expired"})
    return order if row is None else _row(OrderRow, row)


async def set_order_processing(conn: Executor, order_id: UUID, request_id: UUID) -> None:
    await conn.execute("UPDATE acme_orders SET status = 'processing', request_id = $2, updated_at = now()"
                       " WHERE id = $1 AND status = 'ready'", order_id, request_id)


async def settle_order(conn: Executor, order: OrderRow) -> OrderRow:
    """A processing order whose certificate request has ended becomes valid (with its certificate) or
    invalid (with the request's error). Read on every look at the order, so no worker needs to know
    about ACME: the request is the truth, the order follows it."""
    if order.status != "processing" or order.request_id is None:
        return order
    row = await conn.fetchrow(
        f"UPDATE acme_orders o SET status = CASE WHEN r.status = 'issued' THEN 'valid' ELSE 'invalid' END,"
        f" certificate_id = r.certificate_id, updated_at = now(),"
        f" error = CASE WHEN r.status = 'failed' THEN jsonb_build_object("
        f"   'type', 'urn:ietf:params:acme:error:badCSR', 'detail', coalesce(r.error_message, 'issuance failed'))"
        f"   END"
        f" FROM certificate_requests r WHERE o.id = $1 AND o.status = 'processing' AND r.id = o.request_id"
        f" AND r.status IN ('issued', 'failed') RETURNING {', '.join('o.' + c for c in OrderRow.__dataclass_fields__)}",
        order.id)
    return order if row is None else _row(OrderRow, row)


async def previous_certificate(conn: Executor, account_id: UUID, identifiers: list[dict[str, str]]) -> UUID | None:
    """The account's newest certificate for exactly these identifiers that is unrevoked, unexpired and
    not yet renewed: a new order for the same names is its renewal (linked as the API's renewals are)."""
    value: UUID | None = await conn.fetchval(
        "SELECT c.id FROM acme_orders o JOIN certificates c ON c.id = o.certificate_id"
        " WHERE o.account_id = $1 AND o.identifiers = $2::jsonb AND c.revoked_at IS NULL AND c.deleted_at IS NULL"
        " AND c.renewed_by_id IS NULL AND c.not_after > now() ORDER BY c.created_at DESC LIMIT 1",
        account_id, identifiers)
    return value


async def order_certificate(conn: Executor, account_id: UUID, order_id: UUID) -> tuple[str, str] | None:
    """(leaf PEM, chain PEM) of a valid order of the account."""
    row = await conn.fetchrow(
        "SELECT c.certificate_pem, coalesce(c.chain_pem, ch.chain) AS chain_pem FROM acme_orders o"
        " JOIN certificates c ON c.id = o.certificate_id LEFT JOIN certificate_chains ch ON ch.digest = c.chain_digest"
        " WHERE o.id = $1 AND o.account_id = $2 AND o.status = 'valid' AND c.deleted_at IS NULL",
        order_id, account_id)
    return None if row is None else (row["certificate_pem"], row["chain_pem"])


# -- revocation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCertificate:
    id: UUID
    project_id: UUID
    ca_id: UUID | None
    certificate_pem: str
    revoked: bool


async def profile_certificate(conn: Executor, profile_id: UUID, serial_hex: str) -> list[IssuedCertificate]:
    """Certificates of the profile with this serial (one per issuer at most; the caller compares DER)."""
    rows = await conn.fetch(
        "SELECT id, project_id, ca_id, certificate_pem, revoked_at IS NOT NULL AS revoked FROM certificates"
        " WHERE profile_id = $1 AND serial_number = $2 AND deleted_at IS NULL", profile_id, serial_hex)
    return [IssuedCertificate(r["id"], r["project_id"], r["ca_id"], r["certificate_pem"], r["revoked"]) for r in rows]


async def account_ordered(conn: Executor, account_id: UUID, certificate_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM acme_orders WHERE account_id = $1 AND certificate_id = $2",
                                    account_id, certificate_id))


async def authorized_for_all(conn: Executor, account_id: UUID, identifiers: list[tuple[str, str]]) -> bool:
    """Whether the account holds a valid, unexpired authorization for every identifier (RFC 8555 7.6:
    such an account may revoke a certificate for those names, though another account ordered it)."""
    if not identifiers:
        return False
    count = await conn.fetchval(
        "SELECT count(DISTINCT (a.identifier_type, a.identifier_value)) FROM acme_authorizations a"
        " JOIN acme_orders o ON o.id = a.order_id WHERE o.account_id = $1 AND a.status = 'valid'"
        " AND a.expires_at > now() AND (a.identifier_type, a.identifier_value) IN"
        " (SELECT * FROM unnest($2::text[], $3::text[]))",
        account_id, [t for t, _ in identifiers], [v for _, v in identifiers])
    return bool(count == len(set(identifiers)))


# -- the validator (worker side) --------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationTarget:
    challenge_id: UUID
    type: str
    token: str
    status: str
    seconds_since_start: float
    identifier_type: str
    value: str
    wildcard: bool
    thumbprint: str


async def validation_target(conn: Executor, challenge_id: UUID) -> ValidationTarget | None:
    row = await conn.fetchrow(
        "SELECT c.id, c.type, c.token, c.status, extract(epoch FROM now() - coalesce(c.started_at, now())) AS since,"
        " a.identifier_type, a.identifier_value, a.wildcard, acct.jwk_thumbprint"
        " FROM acme_challenges c JOIN acme_authorizations a ON a.id = c.authorization_id"
        " JOIN acme_orders o ON o.id = a.order_id JOIN acme_accounts acct ON acct.id = o.account_id"
        " WHERE c.id = $1", challenge_id)
    if row is None:
        return None
    return ValidationTarget(row["id"], row["type"], row["token"], row["status"], float(row["since"]),
                            row["identifier_type"], row["identifier_value"], row["wildcard"], row["jwk_thumbprint"])


async def challenge_passed(conn: Executor, challenge_id: UUID) -> bool:
    """One statement: the challenge and its authorization become valid, and the order ready once every
    authorization of it is valid. Only a challenge still processing counts (a second delivery of the task
    finds it done)."""
    return bool(await conn.fetchval(
        "WITH chall AS (UPDATE acme_challenges SET status = 'valid', validated_at = now(), error = NULL,"
        "   updated_at = now() WHERE id = $1 AND status = 'processing' RETURNING authorization_id),"
        " authz AS (UPDATE acme_authorizations a SET status = 'valid' FROM chall WHERE a.id = chall.authorization_id"
        "   AND a.status = 'pending' RETURNING a.id, a.order_id),"
        " ord AS (UPDATE acme_orders o SET status = 'ready', updated_at = now() FROM authz"
        "   WHERE o.id = authz.order_id AND o.status = 'pending' AND NOT EXISTS (SELECT 1 FROM acme_authorizations x"
        "   WHERE x.order_id = o.id AND x.id <> authz.id AND x.status <> 'valid') RETURNING 1)"
        " SELECT count(*) FROM chall", challenge_id))


async def challenge_failed(conn: Executor, challenge_id: UUID, error: dict[str, Any]) -> bool:
    """The challenge is invalid with its error, and so are its authorization and its order (RFC 8555
    7.1.6: one failed authorization makes the order invalid); the order carries the error too."""
    return bool(await conn.fetchval(
        "WITH chall AS (UPDATE acme_challenges SET status = 'invalid', error = $2, updated_at = now()"
        "   WHERE id = $1 AND status = 'processing' RETURNING authorization_id),"
        " authz AS (UPDATE acme_authorizations a SET status = 'invalid' FROM chall WHERE a.id = chall.authorization_id"
        "   RETURNING a.order_id),"
        " ord AS (UPDATE acme_orders o SET status = 'invalid', error = $2, updated_at = now() FROM authz"
        "   WHERE o.id = authz.order_id AND o.status IN ('pending', 'ready') RETURNING 1)"
        " SELECT count(*) FROM chall", challenge_id, error))


async def note_attempt(conn: Executor, challenge_id: UUID, error: dict[str, Any]) -> None:
    """A try that failed while time remains: counted, with its error (clients see it while polling)."""
    await conn.execute("UPDATE acme_challenges SET attempts = attempts + 1, error = $2, updated_at = now()"
                       " WHERE id = $1 AND status = 'processing'", challenge_id, error)


# -- clean-up (beat) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    nonces: int
    orders: int
    authorizations: int


async def delete_expired(conn: Executor, limit: int = 10_000) -> Cleaned:
    """Remove expired nonces, expired orders that never got a certificate (with their authorizations and
    challenges), and the authorizations of expired valid orders (an order row that names its certificate
    stays: it is what lets its account revoke it, one small row per certificate). Bounded per call; beat
    calls again next time."""
    # Orders are settled when read (settle_order); one nobody reads again is settled here, so that an
    # expired one whose request failed can go like any invalid order.
    await conn.execute(
        "UPDATE acme_orders o SET status = CASE WHEN r.status = 'issued' THEN 'valid' ELSE 'invalid' END,"
        " certificate_id = r.certificate_id, updated_at = now(),"
        " error = CASE WHEN r.status = 'failed' THEN jsonb_build_object('type', 'urn:ietf:params:acme:error:badCSR',"
        "   'detail', coalesce(r.error_message, 'issuance failed')) END"
        " FROM certificate_requests r WHERE o.id IN (SELECT o2.id FROM acme_orders o2 JOIN certificate_requests r2"
        "   ON r2.id = o2.request_id WHERE o2.status = 'processing' AND r2.status IN ('issued', 'failed') LIMIT $1)"
        " AND r.id = o.request_id", limit)
    nonces = await conn.fetchval(
        "WITH gone AS (DELETE FROM acme_nonces WHERE nonce IN (SELECT nonce FROM acme_nonces WHERE expires_at < now()"
        " LIMIT $1) RETURNING 1) SELECT count(*) FROM gone", limit)
    authorizations = await conn.fetchval(
        "WITH gone AS (DELETE FROM acme_authorizations WHERE id IN (SELECT a.id FROM acme_authorizations a"
        " JOIN acme_orders o ON o.id = a.order_id WHERE o.expires_at < now() AND o.status IN ('valid', 'pending',"
        " 'ready', 'invalid') LIMIT $1) RETURNING 1) SELECT count(*) FROM gone", limit)
    orders = await conn.fetchval(
        "WITH gone AS (DELETE FROM acme_orders WHERE id IN (SELECT id FROM acme_orders WHERE expires_at < now()"
        " AND status IN ('pending', 'ready', 'invalid') LIMIT $1) RETURNING 1) SELECT count(*) FROM gone", limit)
    return Cleaned(int(nonces), int(orders), int(authorizations))


async def stalled_validations(conn: Executor, older_than_seconds: float, limit: int = 1000) -> list[UUID]:
    """Challenges processing with no progress for a while: their task message was lost (the broker is a
    doorbell), so beat rings again."""
    rows = await conn.fetch("SELECT id FROM acme_challenges WHERE status = 'processing'"
                            " AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2",
                            older_than_seconds, limit)
    return [r["id"] for r in rows]


def identifiers_json(identifiers: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The stored (and compared) form of an order's identifiers: sorted, unique."""
    return [{"type": t, "value": v} for t, v in sorted(set(identifiers))]
