"""Reading request input into pydantic models, with every problem reported as a 400 field error."""

from __future__ import annotations

import json
import math
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import BadRequest, FieldError, PayloadTooLarge, ValidationFailure

M = TypeVar("M", bound=BaseModel)


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append(FieldError(path or "body", err["msg"]))
    return out


BODY_LIMIT = "kms.body_limit"


async def read_body(request: web.Request) -> bytes:
    """The body, refused with 413 as soon as it passes this route's limit (chunked bodies included)."""
    limit: int = request.get(BODY_LIMIT, 1024 * 1024)
    buf = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
    return bytes(buf)


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise BadRequest(f"expected Content-Type application/json, got {request.content_type or 'none'}")
    raw = await read_body(request)
    try:
        # orjson first (much faster); anything it refuses is read again by the standard library, whose
        # acceptance (integers beyond 64 bits) and error messages are the contract.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    else:
        _check_storable(data)
        return data
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # an integer literal of more than 4300 digits
        raise BadRequest(f"request body has a number too large to read: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    _check_storable(data)
    return data


def _check_storable(data: Any) -> None:
    """No NUL character and no lone surrogate (``"\\ud800"``) in any string or key: PostgreSQL can store
    neither, in text or jsonb. No NaN, no Infinity, no number past the double range (``1e400``, which
    the standard library reads as infinity): they are not JSON numbers (RFC 8259), and jsonb refuses
    them. Iterative, so any depth ``json.loads`` accepted is walked safely."""
    errors: list[FieldError] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack and len(errors) < 20:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                sub = f"{path}.{key}" if path else str(key)
                if not storable(key):
                    errors.append(FieldError(path or "body", "a key contains a NUL character or a lone surrogate"))
                else:
                    stack.append((sub, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and not storable(value):
            errors.append(FieldError(path or "body", "must not contain a NUL character or a lone surrogate"))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(FieldError(path or "body", "must be a finite JSON number (not NaN, Infinity or past "
                                                     "the double range)"))
    if errors:
        raise BadRequest("request body has values that cannot be stored", errors)


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no NUL character, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc, prefix)
        listed = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise ValidationFailure(f"request body failed validation: {listed}" if listed else
                                "request body failed validation", errors) from None


async def parse(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


FORM: Final = "application/x-www-form-urlencoded"


async def read_form(request: web.Request) -> dict[str, str]:
    """A form-encoded body as a flat object (a repeated field: its last value), under the same size limit
    and storability rules as JSON."""
    raw = await read_body(request)
    try:
        text = raw.decode()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict",
                          max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"request body is not a valid form-encoded body: {exc}") from None
    data = dict(pairs)
    _check_storable(data)
    return data


async def parse_json_or_form(request: web.Request, model: type[M]) -> M:
    """For the routes upstream's older clients post forms to (the login): JSON, or form-encoded."""
    if request.content_type == FORM:
        return validate(model, await read_form(request))
    return await parse(request, model)


def path_uuid(request: web.Request, name: str) -> UUID:
    """A UUID from the path; anything else fails the schema (422, as upstream answers it)."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise ValidationFailure(f"{name} in the path is not a UUID", [FieldError(name, "not a UUID")]) from None


def query_uuid(request: web.Request, name: str, *, required: bool = True) -> UUID | None:
    value = request.query.get(name)
    if value is None:
        if required:
            raise ValidationFailure(f"query parameter {name} is required", [FieldError(name, "required")])
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ValidationFailure(f"query parameter {name} is not a UUID", [FieldError(name, "not a UUID")]) \
            from None


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise ValidationFailure(f"query parameter {name} must be an integer",
                                [FieldError(name, "not an integer")]) from None
    if not low <= n <= high:
        raise ValidationFailure(f"query parameter {name} must be between {low} and {high}",
                         [FieldError(name, f"must be between {low} and {high}")])
    return n
