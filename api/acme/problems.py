"""ACME problem documents (RFC 8555 6.7): the only shape an error leaves the ACME server in.

The body is RFC 7807 with an ``urn:ietf:params:acme:error:*`` type, plus the fields every answer of this
API carries (``requestId``, upstream's ``statusCode``/``message``), which ACME clients ignore.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.problem import ERROR_NAMES

ERROR_PREFIX = "urn:ietf:params:acme:error:"

# The status each ACME error type is answered with (RFC 8555 6.7 leaves most to the server; these are
# Boulder's and pebble's choices, which clients are used to).
STATUS = {
    "accountDoesNotExist": 400, "alreadyRevoked": 400, "badCSR": 400, "badNonce": 400, "badPublicKey": 400,
    "badRevocationReason": 400, "badSignatureAlgorithm": 400, "caa": 403, "connection": 400, "dns": 400,
    "externalAccountRequired": 401, "incorrectResponse": 400, "invalidContact": 400, "malformed": 400,
    "orderNotReady": 403, "rateLimited": 429, "rejectedIdentifier": 400, "serverInternal": 500, "tls": 400,
    "unauthorized": 403, "unsupportedContact": 400, "unsupportedIdentifier": 400, "userActionRequired": 403,
}


class AcmeProblem(Exception):
    """An ACME error: ``kind`` is the part after ``urn:ietf:params:acme:error:``."""

    def __init__(self, kind: str, detail: str, *, status: int | None = None, retry_after: int | None = None,
                 subproblems: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status or STATUS.get(kind, 400)
        self.retry_after = retry_after
        self.subproblems = subproblems
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        return problem_document(self.kind, self.detail, self.status, self.subproblems)


def problem_document(kind: str, detail: str, status: int, subproblems: list[dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    body: dict[str, Any] = {"type": ERROR_PREFIX + kind, "detail": detail, "status": status}
    if subproblems:
        body["subproblems"] = subproblems
    return body


def problem_response(problem: AcmeProblem, request_id: str | None) -> web.Response:
    body = problem.document()
    body.update({"title": problem.kind, "requestId": request_id, "reqId": request_id, "statusCode": problem.status,
                 "message": problem.detail, "error": ERROR_NAMES.get(problem.status, "Error"), "errors": [],
                 "details": []})
    headers = dict(problem.headers)
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return web.Response(status=problem.status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)
