"""Client secrets and access tokens: how they are made and how they are stored.

Client secrets are stored as scrypt hashes with a per-secret salt: slow on purpose, so a stolen table
does not yield secrets. Access tokens are 256-bit random strings; only their SHA-256 digest is stored
(a fast hash is right here: the token has full entropy, and every request must look it up).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: N=2**14, r=8, p=1 is ~16 MiB and tens of milliseconds a hash (login only).
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
TOKEN_PREFIX = "kms_at_"  # noqa: S105  (a prefix, not a secret)
CLIENT_SECRET_PREFIX = "kms_cs_"  # noqa: S105


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_client_id() -> str:
    return "kms_ci_" + secrets.token_hex(16)


def new_client_secret() -> str:
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash``: self-describing, so the cost can be raised later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected),
            maxmem=64 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Used when the client id is unknown, so that a login with an unknown id costs as much as a wrong
# secret and response times do not tell which client ids exist.
DUMMY_HASH = hash_secret("kms-dummy-secret")


def new_access_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(token: str) -> bool:
    """A cheap shape check, so malformed tokens are refused without touching the database."""
    if not token.startswith(TOKEN_PREFIX):
        return False
    body = token[len(TOKEN_PREFIX):]
    return 40 <= len(body) <= 64 and all(c.isalnum() or c in "-_" for c in body)
