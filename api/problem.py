"""RFC 9457 problem details: the only shape an error leaves the API in."""

from __future__ import annotations

import json

from aiohttp import web

from shared.errors import FieldError, KmsError

PROBLEM_TYPE_BASE = "https://kms.hanzo.ai/problems/"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    request_id: str | None,
    type_slug: str = "about:blank",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "type": type_slug if type_slug == "about:blank" else PROBLEM_TYPE_BASE + type_slug,
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [e.as_dict() for e in errors or []],
        "requestId": request_id,
        # Upstream's clients show ``message`` (DESIGN 5.1): the same text as ``detail``.
        "message": detail,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json", headers=headers
    )


def from_error(err: KmsError, request_id: str | None) -> web.Response:
    headers = None
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
    return problem_response(
        err.status, err.title, err.detail, request_id=request_id, type_slug=err.type_slug,
        errors=err.errors, headers=headers,
    )
