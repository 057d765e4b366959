"""External account binding (RFC 8555 7.3.4): each ACME profile's HMAC key, and checking a binding.

The key is made on first use (the reveal route, or the first new-account), sealed under the project's
data key and bound to its row, as server-made private keys are: the API opens it to check bindings, and
shows it only to callers of the reveal route. The ``kid`` is the profile id (DESIGN.md 8).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, cast
from uuid import UUID

from acme import jws as acme_jws
from josepy.json_util import encode_b64jose
from josepy.jwk import JWK, JWKOct

from api.acme.jws import parse_jws, thumbprint
from api.acme.problems import AcmeProblem
from shared.db import Executor
from shared.db import acme as db
from shared.secrets.keyring import KeyRing

TABLE = "acme_eab_keys"
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


async def eab_key(conn: Executor, keyring: KeyRing, profile_id: UUID, project_id: UUID) -> bytes:
    """The profile's HMAC key, made (and sealed) the first time it is asked for."""
    sealed = await db.eab_key(conn, profile_id)
    if sealed is None:
        fresh = await keyring.seal(conn, project_id, secrets.token_bytes(32), table=TABLE, row_id=profile_id)
        sealed = await db.insert_eab_key(conn, profile_id, project_id, fresh)
    return await keyring.open(conn, project_id, sealed, table=TABLE, row_id=profile_id)


def encode_key(key: bytes) -> str:
    """The form clients take the key in (certbot's --eab-hmac-key, cert-manager's secret): base64url."""
    return encode_b64jose(key)


def check_binding(binding: Any, *, key: bytes, profile_id: UUID, url: str, account_key: JWK) -> str:
    """Verify a new-account's ``externalAccountBinding``; returns its kid."""
    if not isinstance(binding, dict):
        raise AcmeProblem("malformed", "externalAccountBinding must be a JWS object")
    signed, header = parse_jws(json.dumps(binding).encode())
    alg = header.alg.name if header.alg is not None else None
    if alg not in HMAC_ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", "the external account binding must be signed with HS256, "
                                                   "HS384 or HS512")
    if header.kid != str(profile_id):
        raise AcmeProblem("unauthorized", "the external account binding's kid is not this profile's EAB kid")
    if header.url != url:
        raise AcmeProblem("malformed", "the external account binding's url is not the new-account URL")
    if header.nonce is not None or header.jwk is not None:
        raise AcmeProblem("malformed", "the external account binding must carry no nonce and no jwk")
    try:
        valid = acme_jws.JWS.verify(signed, JWKOct(key=key))
    except Exception:
        valid = False
    if not valid:
        raise AcmeProblem("unauthorized", "the external account binding's MAC does not verify with this "
                                          "profile's EAB key")
    try:
        bound = cast(JWK, JWK.from_json(json.loads(signed.payload)))
    except Exception:
        raise AcmeProblem("malformed", "the external account binding's payload is not a JWK") from None
    if thumbprint(bound) != thumbprint(account_key):
        raise AcmeProblem("unauthorized", "the external account binding is for another account key")
    return header.kid
