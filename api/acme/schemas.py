"""ACME resources as they go over the wire, built with ``acme.messages`` (the certbot project's own
message types, so what we send is what its client decodes), and the identifiers an order may name."""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from acme import challenges, messages
from josepy.json_util import decode_b64jose
from pydantic import ValidationError

from api.acme.problems import AcmeProblem
from shared.db.acme import AccountRow, AuthorizationRow, ChallengeRow, OrderRow
from shared.policy.attributes import AltNameInput

MAX_IDENTIFIERS = 100
CHALLENGE_TYPES = {"http-01": challenges.HTTP01, "dns-01": challenges.DNS01}


class Urls:
    """Every URL of one profile's ACME server, from its base (``.../acme/profiles/{profileId}``)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def directory(self) -> str:
        return f"{self.base}/directory"

    def new_nonce(self) -> str:
        return f"{self.base}/new-nonce"

    def new_account(self) -> str:
        return f"{self.base}/new-account"

    def accounts(self) -> str:
        return f"{self.base}/accounts"

    def account(self, account_id: object) -> str:
        return f"{self.base}/accounts/{account_id}"

    def account_orders(self, account_id: object) -> str:
        return f"{self.base}/accounts/{account_id}/orders"

    def new_order(self) -> str:
        return f"{self.base}/new-order"

    def order(self, order_id: object) -> str:
        return f"{self.base}/orders/{order_id}"

    def finalize(self, order_id: object) -> str:
        return f"{self.base}/orders/{order_id}/finalize"

    def certificate(self, order_id: object) -> str:
        return f"{self.base}/orders/{order_id}/certificate"

    def authorization(self, authz_id: object) -> str:
        return f"{self.base}/authorizations/{authz_id}"

    def challenge(self, authz_id: object, challenge_id: object) -> str:
        return f"{self.base}/authorizations/{authz_id}/challenges/{challenge_id}"

    def revoke(self) -> str:
        return f"{self.base}/revoke-cert"

    def key_change(self) -> str:
        return f"{self.base}/key-change"


def directory(urls: Urls, *, eab_required: bool) -> dict[str, Any]:
    meta = messages.Directory.Meta(external_account_required=eab_required)
    return cast(dict[str, Any], messages.Directory({
        "newNonce": urls.new_nonce(), "newAccount": urls.new_account(), "newOrder": urls.new_order(),
        "revokeCert": urls.revoke(), "keyChange": urls.key_change(), "meta": meta.to_json(),
    }).to_json())


def account(row: AccountRow, urls: Urls) -> dict[str, Any]:
    body = messages.Registration(status=messages.Status(row.status), contact=tuple(row.contact)).to_json()
    body["orders"] = urls.account_orders(row.id)
    return cast(dict[str, Any], body)


def _identifier(kind: str, value: str) -> messages.Identifier:
    return messages.Identifier(typ=messages.IdentifierType(kind), value=value)


def _error(doc: dict[str, Any] | None) -> messages.Error | None:
    return None if doc is None else messages.Error.from_json(doc)


def order(row: OrderRow, authorizations: list[AuthorizationRow], urls: Urls) -> dict[str, Any]:
    body = messages.Order(
        identifiers=tuple(_identifier(i["type"], i["value"]) for i in row.identifiers),
        status=messages.Status(row.status), authorizations=[urls.authorization(a.id) for a in authorizations],
        finalize=urls.finalize(row.id), expires=row.expires_at, error=_error(row.error),
        certificate=urls.certificate(row.id) if row.status == "valid" else None,
    )
    return body.to_json()  # type: ignore[no-any-return]


def challenge(row: ChallengeRow, urls: Urls) -> dict[str, Any]:
    chall = CHALLENGE_TYPES[row.type](token=decode_b64jose(row.token))
    body = messages.ChallengeBody(chall=chall, status=messages.Status(row.status),
                                  _url=urls.challenge(row.authorization_id, row.id), validated=row.validated_at,
                                  error=_error(row.error))
    return body.to_json()  # type: ignore[no-any-return]


def authorization(row: AuthorizationRow, challenge_rows: list[ChallengeRow], urls: Urls) -> dict[str, Any]:
    body = messages.Authorization(
        identifier=_identifier(row.identifier_type, row.identifier_value), status=messages.Status(row.status),
        expires=row.expires_at, challenges=[messages.ChallengeBody.from_json(challenge(c, urls))
                                            for c in challenge_rows],
        wildcard=True if row.wildcard else None)
    return body.to_json()  # type: ignore[no-any-return]


def identifiers_of(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The (type, value) identifiers of a new-order payload, normalized (DNS names lower-case without a
    trailing dot, IP addresses in their canonical form), or ``malformed`` / ``unsupportedIdentifier`` /
    ``rejectedIdentifier``. A wildcard keeps its ``*.``."""
    raw = payload.get("identifiers")
    if not isinstance(raw, list) or not raw:
        raise AcmeProblem("malformed", "identifiers must be a non-empty list")
    if len(raw) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"an order names at most {MAX_IDENTIFIERS} identifiers")
    out: list[tuple[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(
                item.get("value"), str):
            raise AcmeProblem("malformed", "each identifier is an object with type and value strings")
        kind, value = item["type"], item["value"]
        if kind == "dns":
            out.append(("dns", _dns_identifier(value)))
        elif kind == "ip":
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise AcmeProblem("malformed", f"{value[:100]!r} is not an IP address") from None
            out.append(("ip", str(address)))
        else:
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {kind[:40]!r} is not supported "
                                                       "(dns and ip are)")
    return sorted(set(out))


def _dns_identifier(value: str) -> str:
    name = value.lower().rstrip(".")
    try:
        AltNameInput(type="dns_name", value=name)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise AcmeProblem("rejectedIdentifier", f"{value[:260]!r} is not a DNS name: {reason}") from None
    if "*" in name[2:] or ("*" in name and not name.startswith("*.")):
        raise AcmeProblem("rejectedIdentifier", f"{value!r}: a wildcard must be the whole leftmost label ('*.')")
    return name


def san_type(kind: str) -> str:
    return "dns_name" if kind == "dns" else "ip_address"
