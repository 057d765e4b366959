"""Directory, nonces and accounts (RFC 8555 7.1.1, 7.2, 7.3): new-account with external account binding,
account reads and updates, deactivation, and key-change."""

from __future__ import annotations

import json
from typing import Any, cast

from aiohttp import web
from josepy.jwk import JWK

from api.acme import schemas
from api.acme.eab import check_binding, eab_key
from api.acme.jws import check_account_key, parse_jws, thumbprint
from api.acme.problems import AcmeProblem
from api.acme.server import Acme, acme_route, json_answer, path_id
from api.context import KEYRING
from shared.db import acme as db
from shared.db.acme import AccountRow

MAX_CONTACTS = 10


@acme_route("GET", "/directory", summary="ACME directory (RFC 8555 7.1.1)")
async def directory(acme: Acme) -> web.Response:
    required = not acme.acme_config.get("skipEabBinding", False)
    return json_answer(schemas.directory(acme.urls, eab_required=required))


async def _nonce(acme: Acme, status: int) -> web.Response:
    # The nonce itself is added to every ACME answer (api.acme.server); this answer only carries it.
    return web.Response(status=status)


@acme_route("HEAD", "/new-nonce", summary="A fresh replay nonce in Replay-Nonce (RFC 8555 7.2)")
async def new_nonce_head(acme: Acme) -> web.Response:
    return await _nonce(acme, 200)


@acme_route("GET", "/new-nonce", summary="A fresh replay nonce in Replay-Nonce (RFC 8555 7.2)")
async def new_nonce_get(acme: Acme) -> web.Response:
    return await _nonce(acme, 204)


def _contacts(payload: dict[str, Any]) -> list[str] | None:
    contact = payload.get("contact")
    if contact is None:
        return None
    if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
        raise AcmeProblem("malformed", "contact must be a list of URLs")
    if len(contact) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"at most {MAX_CONTACTS} contacts")
    for c in contact:
        if not c.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", "only mailto: contacts are supported")
        address = c.removeprefix("mailto:")
        if "@" not in address or len(address) > 254 or any(ch in address for ch in " ,<>\r\n\x00"):
            raise AcmeProblem("invalidContact", f"{c[:80]!r} is not a single e-mail address")
    return list(contact)


def _account_answer(acme: Acme, row: AccountRow, status: int) -> web.Response:
    return json_answer(schemas.account(row, acme.urls), status=status, location=acme.urls.account(row.id))


@acme_route("POST", "/new-account", summary="Create (or find) an ACME account (RFC 8555 7.3)")
async def new_account(acme: Acme) -> web.Response:
    signed = await acme.verify(key="jwk")
    payload = signed.json()
    key_id = thumbprint(signed.jwk)
    existing = await db.account_by_key(acme.pool, acme.profile_id, key_id)
    if existing is not None:
        return _account_answer(acme, existing, 200)
    if payload.get("onlyReturnExisting") is True:
        raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
    contacts = _contacts(payload) or []
    eab_kid = None
    if not acme.acme_config.get("skipEabBinding", False):
        binding = payload.get("externalAccountBinding")
        if binding is None:
            raise AcmeProblem("externalAccountRequired", "this ACME server requires an external account binding: "
                              "kid is the profile id, the HMAC key comes from GET /api/v1/cert-manager/"
                              "certificate-profiles/{id}/acme/eab-secret/reveal")
        key = await eab_key(acme.pool, acme.request.app[KEYRING], acme.profile_id, acme.project_id)
        eab_kid = check_binding(binding, key=key, profile_id=acme.profile_id, url=acme.urls.new_account(),
                                account_key=signed.jwk)
    row = await db.insert_account(acme.pool, profile_id=acme.profile_id, project_id=acme.project_id,
                                  jwk=signed.jwk.to_json(), thumbprint=key_id, contact=contacts, eab_kid=eab_kid)
    if row is None:  # the same key registered at the same moment: that account is this one
        row = await db.account_by_key(acme.pool, acme.profile_id, key_id)
        assert row is not None
        return _account_answer(acme, row, 200)
    return _account_answer(acme, row, 201)


def _own_account(acme: Acme, account: AccountRow) -> None:
    if path_id(acme, "accountId") != account.id:
        raise AcmeProblem("unauthorized", "the JWS is signed by another account", status=403)


@acme_route("POST", "/accounts/{accountId}", summary="Read, update or deactivate an ACME account (RFC 8555 7.3.2)")
async def account(acme: Acme) -> web.Response:
    signed = await acme.verify()
    current = signed.require_account()
    _own_account(acme, current)
    if signed.post_as_get:
        return _account_answer(acme, current, 200)
    payload = signed.json()
    status = payload.get("status")
    if status is not None and status != "deactivated":
        raise AcmeProblem("malformed", "an account's status can only be changed to deactivated")
    async with acme.pool.acquire() as conn, conn.transaction():
        row = await db.update_account(conn, current.id, contact=_contacts(payload), deactivate=status == "deactivated")
    return _account_answer(acme, row, 200)


@acme_route("POST", "/accounts/{accountId}/orders", summary="An ACME account's pending orders (RFC 8555 7.1.2.1)")
async def account_orders(acme: Acme) -> web.Response:
    signed = await acme.verify()
    current = signed.require_account()
    _own_account(acme, current)
    ids = await db.account_orders(acme.pool, current.id)
    return json_answer({"orders": [acme.urls.order(i) for i in ids]})


@acme_route("POST", "/key-change", summary="Roll an ACME account over to a new key (RFC 8555 7.3.5)")
async def key_change(acme: Acme) -> web.Response:
    signed = await acme.verify()
    current = signed.require_account()
    inner, header = parse_jws(signed.payload)
    if header.jwk is None or header.kid is not None:
        raise AcmeProblem("malformed", "the inner JWS of key-change must carry the new key as jwk, and no kid")
    if header.url != signed.url:
        raise AcmeProblem("malformed", "the inner JWS's url must equal the outer JWS's url")
    new_key = header.jwk
    check_account_key(new_key)
    try:
        valid = inner.verify(new_key)
    except Exception:
        valid = False
    if not valid:
        raise AcmeProblem("malformed", "the inner JWS is not signed by the new key")
    try:
        body = json.loads(inner.payload)
    except (UnicodeDecodeError, ValueError):
        raise AcmeProblem("malformed", "the inner JWS payload is not JSON") from None
    if not isinstance(body, dict) or body.get("account") != acme.urls.account(current.id):
        raise AcmeProblem("malformed", "the inner payload's account must be the URL of the signing account")
    try:
        old_key = cast(JWK, JWK.from_json(body["oldKey"]))
    except Exception:
        raise AcmeProblem("malformed", "the inner payload's oldKey is not a JWK") from None
    if thumbprint(old_key) != current.jwk_thumbprint:
        raise AcmeProblem("malformed", "oldKey is not the account's current key")
    new_id = thumbprint(new_key)
    holder = await db.account_by_key(acme.pool, acme.profile_id, new_id)
    if holder is not None or not await _change(acme, current, new_key.to_json(), new_id):
        holder = holder or await db.account_by_key(acme.pool, acme.profile_id, new_id)
        raise AcmeProblem("malformed", "the new key already belongs to an account", status=409,
                          headers={"Location": acme.urls.account(holder.id)} if holder else None)
    updated = await db.get_account(acme.pool, acme.profile_id, current.id)
    assert updated is not None
    return _account_answer(acme, updated, 200)


async def _change(acme: Acme, current: AccountRow, jwk: dict[str, Any], key_id: str) -> bool:
    async with acme.pool.acquire() as conn, conn.transaction():
        return await db.change_key(conn, current.id, jwk, key_id)
