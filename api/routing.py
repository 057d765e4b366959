"""One route table per module, with the pydantic models each route reads and writes.

The same models validate request bodies (``api.body.parse``) and generate ``/openapi.json``,
so the published schema cannot drift from what the server accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Handler
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    public: bool = False
    query: dict[str, str] = field(default_factory=dict)
    tag: str = "default"
    # Regular expressions for path parameters that are not one segment (``{name}`` in ``path`` stays the
    # canonical spelling the router, the middleware and /openapi.json all see).
    patterns: dict[str, str] = field(default_factory=dict)

    def router_path(self) -> str:
        path = self.path
        for name, pattern in self.patterns.items():
            path = path.replace("{" + name + "}", "{" + name + ":" + pattern + "}")
        return path


class Routes:
    """A route table that remembers each route's models for the OpenAPI document."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        public: bool = False,
        query: dict[str, str] | None = None,
        patterns: dict[str, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(
                method=method, path=path, summary=summary, handler=handler, body=body,
                response=response, status=status, public=public, query=query or {}, tag=self.tag,
                patterns=patterns or {},
            ))
            return handler
        return register

    def install(self, app: web.Application) -> None:
        for ep in self.endpoints:
            app.router.add_route(ep.method, ep.router_path(), ep.handler)


def absolute_url(request: web.Request, base: str | None, path: str) -> str:
    """``path`` under KMS_PUBLIC_URL, or under the scheme and host the request came to."""
    origin = base.rstrip("/") if base else f"{request.scheme}://{request.host}"
    return origin + path


def is_public(endpoints: list[Endpoint], method: str, canonical_path: str) -> bool:
    return any(ep.public and ep.method == method and ep.path == canonical_path for ep in endpoints)


# The route tables whose public routes relying parties call: CRLs, CA certificates, OCSP.
RELYING_PARTY_TAGS = frozenset({"pki-files", "ocsp"})


def is_relying_party_route(endpoints: list[Endpoint], method: str, canonical_path: str) -> bool:
    return any(ep.public and ep.tag in RELYING_PARTY_TAGS and ep.method == method and ep.path == canonical_path
               for ep in endpoints)


def openapi_document(endpoints: list[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    problem = {"$ref": "#/components/schemas/Problem"}
    field_errors = {"type": "array", "items": {"type": "object", "properties": {
        "field": {"type": "string"}, "message": {"type": "string"}}}}
    # The one error body (api.problem, DESIGN.md 5.1): RFC 9457 fields, then upstream's.
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "errors": field_errors, "requestId": {"type": "string"},
            "message": {"type": "string"}, "reqId": {"type": "string"}, "statusCode": {"type": "integer"},
            "error": {"type": "string"}, "details": field_errors,
        },
        "required": ["type", "title", "status", "detail", "errors", "requestId", "message", "reqId",
                     "statusCode", "error", "details"],
    }
    for ep in endpoints:
        op: dict[str, Any] = {"summary": ep.summary, "tags": [ep.tag], "responses": {}}
        params = [
            {"name": name, "in": "path", "required": True, "schema": _path_param_schema(name)}
            for name in _path_params(ep.path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
             "description": desc}
            for name, desc in ep.query.items()
        ]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(ep.body)}}}
        ok: dict[str, Any] = {"description": "OK"}
        if ep.response is not None:
            ok["content"] = {"application/json": {"schema": ref(ep.response)}}
        op["responses"][str(ep.status)] = ok
        op["responses"]["default"] = {
            "description": "problem", "content": {"application/problem+json": {"schema": problem}}
        }
        if not ep.public:
            op["security"] = [{"bearer": []}]
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def _path_param_schema(name: str) -> dict[str, str]:
    """Every ``{...Id}`` path parameter is read as a UUID (``api.body.path_uuid`` and its kin: anything
    else is a 422); the others (slugs, names, tokens) are plain strings."""
    return {"type": "string", "format": "uuid"} if name.endswith("Id") else {"type": "string"}
