"""Verifying the JWS every ACME POST carries (RFC 8555 6.2-6.5), and replay nonces.

Parsing and signature checks are josepy's (``acme.jws.JWS``, the ACME header fields layered on josepy's
JWS); this module only applies RFC 8555's rules to what josepy decoded:

- flattened JSON serialization with exactly one signature, every header field protected;
- an asymmetric ``alg`` (never ``none`` nor an HMAC), and a key of a sane size;
- exactly one of ``jwk`` (new-account, revoke-cert by certificate key) and ``kid`` (an account URL of
  this profile, the account valid);
- ``url`` equal to the URL the request was sent to, host included (``malformed`` otherwise: a JWS made
  for another server, or another resource, is never replayed here);
- a ``nonce`` this server issued, redeemed exactly once (checked last, after the signature, so a request
  that fails earlier leaves the client's nonce to the client).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal, cast
from uuid import UUID

from acme import jws as acme_jws
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.json_util import encode_b64jose
from josepy.jwk import JWK

from api.acme.problems import AcmeProblem
from api.body import read_body
from shared.db import Executor
from shared.db import acme as db
from shared.db.acme import AccountRow
from shared.errors import PayloadTooLarge

JOSE_JSON = "application/jose+json"
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192


def new_nonce_value() -> str:
    return encode_b64jose(secrets.token_bytes(16))


async def new_nonce(conn: Executor, lifetime_seconds: int) -> str:
    nonce = new_nonce_value()
    await db.issue_nonce(conn, nonce, lifetime_seconds)
    return nonce


@dataclass(frozen=True)
class Signed:
    """A verified request: its payload (``b""`` for POST-as-GET), the key that signed it, and (for
    ``kid`` requests) the account."""

    payload: bytes
    jwk: JWK
    account: AccountRow | None
    url: str
    jws: acme_jws.JWS

    @property
    def post_as_get(self) -> bool:
        return self.payload == b""

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.payload)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise AcmeProblem("malformed", "the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise AcmeProblem("malformed", "the JWS payload must be a JSON object")
        return value

    def require_account(self) -> AccountRow:
        assert self.account is not None
        return self.account


def thumbprint(key: JWK) -> str:
    """The RFC 7638 thumbprint (SHA-256), base64url: what key authorizations and the key index use."""
    return encode_b64jose(key.thumbprint())


def check_account_key(key: JWK) -> None:
    """An account key must be a public RSA (2048-8192 bits) or EC (P-256/384/521) key."""
    inner = getattr(key.key, "_wrapped", key.key)  # josepy wraps keys for comparison
    if isinstance(inner, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= inner.key_size <= MAX_RSA_BITS:
            raise AcmeProblem("badPublicKey", f"RSA account keys must have {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")
    elif isinstance(inner, ec.EllipticCurvePublicKey):
        if inner.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise AcmeProblem("badPublicKey", "EC account keys must be on P-256, P-384 or P-521")
    else:
        raise AcmeProblem("badPublicKey", "the jwk must be a public RSA or EC key")


def parse_jws(raw: bytes) -> tuple[acme_jws.JWS, acme_jws.Header]:
    """The JWS and its protected header, or ``malformed``. josepy decodes; anything it refuses (or
    anything odd it raises on hostile input) is a malformed request, never a server error."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AcmeProblem("malformed", "the request body is not JSON") from None
    if not isinstance(document, dict) or "signatures" in document:
        raise AcmeProblem("malformed", "the request body must be a JWS in flattened JSON serialization")
    if not all(isinstance(document.get(k), str) for k in ("protected", "payload", "signature")):
        raise AcmeProblem("malformed", "a flattened JWS needs protected, payload and signature strings")
    if set(document) - {"protected", "payload", "signature"}:
        raise AcmeProblem("malformed", "every JWS header field must be protected (no unprotected header)")
    try:
        signed = acme_jws.JWS.from_json(document)
        [signature] = signed.signatures
        if signature.protected is None:
            raise AcmeProblem("malformed", "the JWS has no protected header")
        header = acme_jws.Header.json_loads(signature.protected)
    except AcmeProblem:
        raise
    except Exception as exc:  # josepy's DeserializationError, and whatever malformed base64/JSON raises
        raise AcmeProblem("malformed", f"the JWS cannot be decoded: {type(exc).__name__}: {exc}"[:300]) from None
    return signed, header


async def verify(request: web.Request, conn: Executor, *, url: str, profile_id: UUID, account_base: str,
                 key: Literal["jwk", "kid", "either"], body_limit: int) -> Signed:
    """The request's JWS, verified as the module docstring says, or an AcmeProblem."""
    if request.content_type != JOSE_JSON:
        raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", status=415)
    if request.content_length is not None and request.content_length > body_limit:
        raise AcmeProblem("malformed", f"the request body exceeds the {body_limit}-byte limit", status=413)
    try:
        raw = await read_body(request)
    except PayloadTooLarge:
        raise AcmeProblem("malformed", f"the request body exceeds the {body_limit}-byte limit", status=413) from None
    signed, header = parse_jws(raw)
    alg = header.alg.name if header.alg is not None else None
    if alg not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", f"alg {alg!r} is not accepted; use one of {sorted(ALGORITHMS)}",
                          headers={})
    if header.url != url:
        raise AcmeProblem("malformed", f"the protected header's url {header.url!r} is not this request's URL {url!r}")
    if header.nonce is None:
        raise AcmeProblem("badNonce", "the protected header has no nonce")
    if (header.jwk is None) == (header.kid is None):
        raise AcmeProblem("malformed", "the protected header must carry exactly one of jwk and kid")
    account: AccountRow | None = None
    if header.kid is not None:
        if key == "jwk":
            raise AcmeProblem("malformed", "this resource is requested with a jwk, not a kid")
        account = await _account_of(conn, header.kid, profile_id, account_base)
        jwk = cast(JWK, JWK.from_json(account.jwk))
    else:
        if key == "kid":
            raise AcmeProblem("malformed", "this resource is requested with an account URL (kid), not a jwk")
        assert header.jwk is not None
        jwk = header.jwk
        if jwk.key is None or not hasattr(jwk.key, "public_bytes") or hasattr(jwk.key, "private_bytes"):
            raise AcmeProblem("badPublicKey", "the jwk must be a public key")
        check_account_key(jwk)
    try:
        valid = signed.verify(jwk)
    except Exception:  # a key that does not fit the alg, a signature of the wrong length, ...
        valid = False
    if not valid:
        raise AcmeProblem("malformed", "the JWS signature does not verify")
    if not await db.redeem_nonce(conn, encode_b64jose(header.nonce)):
        raise AcmeProblem("badNonce", "the nonce is unknown, used or expired; retry with the Replay-Nonce given")
    return Signed(payload=signed.payload, jwk=jwk, account=account, url=url, jws=signed)


async def _account_of(conn: Executor, kid: str, profile_id: UUID, account_base: str) -> AccountRow:
    prefix = account_base + "/"
    tail = kid[len(prefix):] if kid.startswith(prefix) else ""
    try:
        account_id = UUID(tail)
    except ValueError:
        raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this ACME server") from None
    account = await db.get_account(conn, profile_id, account_id)
    if account is None:
        raise AcmeProblem("accountDoesNotExist", "no such account")
    if account.status != "valid":
        raise AcmeProblem("unauthorized", f"the account is {account.status}")
    return account
