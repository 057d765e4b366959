"""RFC 9457 problem details: the only shape an error leaves the API in."""

from __future__ import annotations

import json

import orjson
from aiohttp import web

from shared.errors import FieldError, KmsError

PROBLEM_TYPE_BASE = "https://kms.hanzo.ai/problems/"
# Upstream's ``error`` names for answers that do not come from a KmsError (the router's, 500s, 503s).
ERROR_NAMES = {400: "BadRequest", 401: "UnauthorizedError", 403: "PermissionDenied", 404: "NotFound",
               405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
               422: "ValidationFailure", 429: "RateLimitExceeded", 500: "InternalServerError",
               503: "ServiceUnavailable"}


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    request_id: str | None,
    type_slug: str = "about:blank",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    error: str | None = None,
) -> web.Response:
    """One body for both kinds of client (DESIGN.md 5.1): RFC 9457 problem fields and upstream's
    ``{reqId, statusCode, message, error, details}``."""
    listed = [e.as_dict() for e in errors or []]
    body = {
        "type": type_slug if type_slug == "about:blank" else PROBLEM_TYPE_BASE + type_slug,
        "title": title,
        "status": status,
        "detail": detail,
        "errors": listed,
        "requestId": request_id,
        # Upstream's clients show ``message``: the same text as ``detail`` (every violation joined).
        "message": detail,
        "reqId": request_id,
        "statusCode": status,
        "error": error or ERROR_NAMES.get(status, "Error"),
        "details": listed,
    }
    try:
        encoded = orjson.dumps(body)
    except TypeError:  # a lone surrogate echoed from the request: the standard library escapes it
        encoded = json.dumps(body).encode()
    return web.Response(status=status, body=encoded, content_type="application/problem+json", headers=headers)


def from_error(err: KmsError, request_id: str | None) -> web.Response:
    headers = None
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
    return problem_response(
        err.status, err.title, err.detail, request_id=request_id, type_slug=err.type_slug,
        errors=err.errors, headers=headers, error=err.error,
    )
