"""Orders, authorizations, challenges, finalize and the certificate (RFC 8555 7.1.3-7.5, 7.4.2).

``finalize`` hands the CSR to the registration authority (``shared.registration``) like any other
certificate request: policy evaluated, an idempotency key per order (one request per order, whatever
the retries), audited, signed by a worker; the order reads ``processing`` until the request ends, then
``valid`` with its certificate (or ``invalid``). Challenge validation is a worker's, on the network
queue: this process only marks a challenge ``processing`` and rings.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import secrets
from datetime import UTC, datetime

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.json_util import decode_b64jose, encode_b64jose
from josepy.jwk import JWK

from api.acme import schemas
from api.acme.problems import AcmeProblem
from api.acme.server import RETRY_AFTER_PROCESSING, Acme, acme_route, json_answer, path_id
from api.context import BROKER
from shared import registration
from shared import tasks as task_names
from shared.db import Executor
from shared.db import acme as db
from shared.db.acme import NewAuthorization, OrderRow
from shared.errors import KmsError, PolicyViolation
from shared.policy.attributes import AltNameInput, IssueAttributes
from shared.policy.evaluation import evaluate_request

log = logging.getLogger("kms.api")
PEM_CHAIN = "application/pem-certificate-chain"


def _new_token() -> str:
    return encode_b64jose(secrets.token_bytes(32))


def _authorizations(identifiers: list[tuple[str, str]]) -> list[NewAuthorization]:
    """One authorization per identifier, offering what can prove it: http-01 and dns-01 for a DNS name
    (both, as upstream), dns-01 only for a wildcard (RFC 8555 7.1.3), http-01 only for an IP address
    (RFC 8738)."""
    out = []
    for kind, value in identifiers:
        wildcard = kind == "dns" and value.startswith("*.")
        types = ("http-01",) if kind == "ip" else ("dns-01",) if wildcard else ("http-01", "dns-01")
        out.append(NewAuthorization(kind, value[2:] if wildcard else value, wildcard, types,
                                    {t: _new_token() for t in types}))
    return out


def _check_policy(acme: Acme, identifiers: list[tuple[str, str]]) -> None:
    """Names the profile's policy refuses are refused at new-order (``rejectedIdentifier``), each in a
    subproblem; everything else the policy says is the CSR's business, checked at finalize."""
    attributes = IssueAttributes(alt_names=[AltNameInput(type=schemas.san_type(t), value=v) for t, v in identifiers])
    try:
        evaluate_request(rules=acme.ctx.rules, defaults=acme.ctx.defaults, attributes=attributes, csr_pem=None,
                         now=datetime.now(UTC))
    except PolicyViolation as exc:
        refused = [e for e in exc.errors if e.field.startswith("attributes.altNames")]
        if refused:
            subproblems = []
            for e in refused:
                index = e.field.removeprefix("attributes.altNames").strip("[]")
                sub = {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": e.message, "status": 400}
                if index.isdigit() and int(index) < len(identifiers):
                    kind, value = identifiers[int(index)]
                    sub["identifier"] = {"type": kind, "value": value}
                subproblems.append(sub)
            raise AcmeProblem("rejectedIdentifier", "the profile's policy refuses: " + "; ".join(
                e.message for e in refused), subproblems=subproblems) from None
    except KmsError:
        pass  # the profile's defaults alone may not make a whole certificate; the CSR will


@acme_route("POST", "/new-order", summary="Create an ACME order (RFC 8555 7.4)")
async def new_order(acme: Acme) -> web.Response:
    signed = await acme.verify()
    account = signed.require_account()
    payload = signed.json()
    if payload.get("notBefore") is not None or payload.get("notAfter") is not None:
        raise AcmeProblem("malformed", "notBefore and notAfter are not supported: the profile sets the validity")
    identifiers = schemas.identifiers_of(payload)
    _check_policy(acme, identifiers)
    settings = acme.settings
    async with acme.pool.acquire() as conn, conn.transaction():
        counts = await db.lock_order_counts(conn, account.id, settings.acme_new_orders_window_seconds)
        if settings.acme_max_pending_orders and counts.open >= settings.acme_max_pending_orders:
            raise AcmeProblem("rateLimited", f"the account has {counts.open} orders not yet final (at most "
                              f"{settings.acme_max_pending_orders}); finalize or let some expire", retry_after=60)
        if settings.acme_new_orders_per_window and counts.recent >= settings.acme_new_orders_per_window:
            raise AcmeProblem("rateLimited", f"the account created {counts.recent} orders in the last "
                              f"{settings.acme_new_orders_window_seconds} s (at most "
                              f"{settings.acme_new_orders_per_window})",
                              retry_after=max(1, math.ceil(counts.window_frees_in)))
        order = await db.insert_order(
            conn, account_id=account.id, profile_id=acme.profile_id, project_id=acme.project_id,
            identifiers=db.identifiers_json(identifiers), authorizations=_authorizations(identifiers),
            lifetime_seconds=settings.acme_order_lifetime_seconds,
            pre_validated=bool(acme.acme_config.get("skipDnsOwnershipVerification", False)))
        authorizations = await db.order_authorizations(conn, order.id)
    return json_answer(schemas.order(order, authorizations, acme.urls), status=201,
                       location=acme.urls.order(order.id))


async def _current(conn: Executor, order: OrderRow) -> OrderRow:
    """The order as it stands now: expired if its time ran out, settled if its request has ended."""
    return await db.settle_order(conn, await db.expire_order(conn, order))


async def _order_answer(acme: Acme, order: OrderRow) -> web.Response:
    authorizations = await db.order_authorizations(acme.pool, order.id)
    headers = {"Retry-After": str(RETRY_AFTER_PROCESSING)} if order.status == "processing" else None
    return json_answer(schemas.order(order, authorizations, acme.urls), location=acme.urls.order(order.id),
                       headers=headers)


async def _order(acme: Acme) -> OrderRow:
    signed = await acme.verify()
    account = signed.require_account()
    order = await db.get_order(acme.pool, account.id, path_id(acme, "orderId"))
    if order is None:
        raise AcmeProblem("malformed", "no such order", status=404)
    return order


@acme_route("POST", "/orders/{orderId}", summary="An ACME order (POST-as-GET; RFC 8555 7.4)")
async def get_order(acme: Acme) -> web.Response:
    order = await _current(acme.pool, await _order(acme))
    return await _order_answer(acme, order)


def _csr_identifiers(csr: x509.CertificateSigningRequest) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError as exc:
        raise AcmeProblem("badCSR", f"the CSR's extensions cannot be read: {exc}") from None
    for name in san or []:
        if isinstance(name, x509.DNSName):
            found.add(("dns", name.value.lower().rstrip(".")))
        elif isinstance(name, x509.IPAddress):
            found.add(("ip", str(name.value)))
        else:
            raise AcmeProblem("badCSR", f"the CSR names a {type(name).__name__}; an order has DNS names and IP "
                                        "addresses only")
    return found


def _check_csr(csr: x509.CertificateSigningRequest, order: OrderRow, account_key: JWK) -> None:
    """RFC 8555 7.4: the CSR names exactly the order's identifiers (its common name, if any, among them),
    is validly signed, and is not for the account key."""
    if not csr.is_signature_valid:
        raise AcmeProblem("badCSR", "the CSR's signature does not verify")
    wanted = {(i["type"], i["value"]) for i in order.identifiers}
    names = _csr_identifiers(csr)
    if names != wanted:
        listing = ", ".join(sorted(v for _, v in names ^ wanted))
        raise AcmeProblem("badCSR", f"the CSR's names differ from the order's identifiers (not in both: {listing})")
    for attr in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        cn = str(attr.value).lower().rstrip(".")
        try:
            as_ip = str(ipaddress.ip_address(cn))
        except ValueError:
            as_ip = None
        if ("dns", cn) not in wanted and ("ip", as_ip) not in wanted:
            raise AcmeProblem("badCSR", f"the CSR's common name {cn!r} is not one of the order's identifiers")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    account_spki = getattr(account_key.key, "_wrapped", account_key.key).public_bytes(*spki)
    if csr.public_key().public_bytes(*spki) == account_spki:
        raise AcmeProblem("badCSR", "the certificate key must not be the account key")


@acme_route("POST", "/orders/{orderId}/finalize", summary="Finalize an ACME order with a CSR (RFC 8555 7.4)")
async def finalize(acme: Acme) -> web.Response:
    signed = await acme.verify()
    account = signed.require_account()
    order_id = path_id(acme, "orderId")
    if await db.get_order(acme.pool, account.id, order_id) is None:
        raise AcmeProblem("malformed", "no such order", status=404)
    payload = signed.json()
    encoded = payload.get("csr")
    if not isinstance(encoded, str):
        raise AcmeProblem("malformed", "finalize needs csr: the DER CSR, base64url")
    try:
        der = decode_b64jose(encoded)
        csr = x509.load_der_x509_csr(der)
    except Exception:
        raise AcmeProblem("badCSR", "csr is not a base64url DER certificate signing request") from None
    async with acme.pool.acquire() as conn, conn.transaction():
        # Locked: two finalize calls at once see one ready order; the second finds it processing.
        order = await db.get_order(conn, account.id, order_id, for_update=True)
        if order is None:
            raise AcmeProblem("malformed", "no such order", status=404)
        order = await db.expire_order(conn, order)
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready: "
                              + ("every authorization must be valid first" if order.status == "pending"
                                 else "it cannot be finalized now"))
        _check_csr(csr, order, signed.jwk)
        try:
            registered = await registration.register_request(
                conn, acme.ctx, csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(), attributes=None,
                remove_roots=False, requested_by=None, idempotency_key=f"acme-order:{order.id}",
                request_hash=hashlib.sha256(der).digest(),
                renewal_of=await db.previous_certificate(conn, account.id, order.identifiers))
        except KmsError as exc:
            detail = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
            raise AcmeProblem("badCSR", f"the profile refuses this CSR: {detail}") from None
        await db.set_order_processing(conn, order.id, registered.request.id)
        await db.audit_order(conn, acme.project_id, account.id, order.id, "acme.order.finalize",
                             {"certificateRequestId": str(registered.request.id)})
    if registered.created:
        await acme.request.app[BROKER].enqueue(str(registered.request.id), registered.request.issuer_kind)
    current = await db.get_order(acme.pool, account.id, order.id)
    assert current is not None
    return await _order_answer(acme, await db.settle_order(acme.pool, current))


@acme_route("POST", "/orders/{orderId}/certificate",
            summary="The certificate of a valid order, with its chain (application/pem-certificate-chain)")
async def certificate(acme: Acme) -> web.Response:
    signed = await acme.verify()
    account = signed.require_account()
    order_id = path_id(acme, "orderId")
    order = await db.get_order(acme.pool, account.id, order_id)
    if order is not None:
        await _current(acme.pool, order)
    found = await db.order_certificate(acme.pool, account.id, order_id)
    if found is None:
        raise AcmeProblem("malformed", "no certificate for this order (it is not valid, or not yours)", status=404)
    leaf, chain = found
    body = leaf.rstrip("\n") + "\n" + chain.strip("\n") + "\n" if chain.strip() else leaf
    return web.Response(body=body.encode(), headers={"Content-Type": PEM_CHAIN})


@acme_route("POST", "/authorizations/{authorizationId}",
            summary="An ACME authorization (POST-as-GET), or its deactivation (RFC 8555 7.5)")
async def authorization(acme: Acme) -> web.Response:
    signed = await acme.verify()
    account = signed.require_account()
    authz_id = path_id(acme, "authorizationId")
    if not signed.post_as_get:
        if signed.json().get("status") != "deactivated":
            raise AcmeProblem("malformed", "an authorization can only be updated to status deactivated")
        if await db.get_authorization(acme.pool, account.id, authz_id) is not None:
            await db.deactivate_authorization(acme.pool, authz_id)
    found = await db.get_authorization(acme.pool, account.id, authz_id)
    if found is None:
        raise AcmeProblem("malformed", "no such authorization", status=404)
    authz, challenge_rows = found
    return json_answer(schemas.authorization(authz, challenge_rows, acme.urls))


@acme_route("POST", "/authorizations/{authorizationId}/challenges/{challengeId}",
            summary="An ACME challenge: POST {} asks for validation by a worker (RFC 8555 7.5.1)")
async def challenge(acme: Acme) -> web.Response:
    signed = await acme.verify()
    account = signed.require_account()
    authz_id, challenge_id = path_id(acme, "authorizationId"), path_id(acme, "challengeId")
    row = await db.get_challenge(acme.pool, account.id, authz_id, challenge_id)
    if row is None:
        raise AcmeProblem("malformed", "no such challenge", status=404)
    if not signed.post_as_get:
        signed.json()  # the response is {} (RFC 8555 7.5.1); anything that is not an object is malformed
        if await db.start_challenge(acme.pool, challenge_id):
            await _ring_validator(acme, challenge_id)
        row = await db.get_challenge(acme.pool, account.id, authz_id, challenge_id)
        assert row is not None
    response = json_answer(schemas.challenge(row, acme.urls))
    response.headers.add("Link", f'<{acme.urls.authorization(authz_id)}>;rel="up"')
    return response


async def _ring_validator(acme: Acme, challenge_id: object) -> None:
    try:
        await acme.request.app[BROKER].send(task_names.ACME_VALIDATE, [str(challenge_id)],
                                            queue=task_names.QUEUE_EXTERNAL)
    except Exception as exc:  # the challenge row is the truth: beat rings again for a stalled validation
        log.warning("validation enqueue failed; beat re-sends it", extra={"error": f"{type(exc).__name__}: {exc}"})
