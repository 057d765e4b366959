"""What every page of the web UI shares: its route table, sessions, CSRF, security headers, templates.

The web UI is served by the API process on the same origin, at ``/`` (the API stays under ``/api``). Its
routes are ``public`` in the route table, so the bearer-token middleware leaves them alone: a page
authenticates its own way, by the session cookie (``shared.users``), and answers HTML, never
problem+json. Every page is wrapped by ``page``, which

- finds the session (a page without one redirects to the sign-in page; the JSON status routes answer 401);
- for a page under ``/projects/{projectId}``, turns the user into an identity of that project with their
  role there (``shared.users.acting_as``), so ``shared.access.authorize`` decides as on the API: another
  project's page, or a resource of one, is a 404 page;
- checks the CSRF token of every POST (the synchronizer token of the session, sent as the form's
  ``csrf`` field) and, when the browser sends one, its ``Origin``;
- renders a ``KmsError`` as an HTML page with the error's status, the field errors beside their fields
  where the page shows a form;
- adds the security headers (a strict Content-Security-Policy without ``unsafe-inline``, nosniff, frame
  denial, no referrer to other sites, no caching of pages that may show a key).

Templates are Jinja2 with autoescaping on for every template: every value is escaped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit
from uuid import UUID

import jinja2
from aiohttp import web

from api.body import read_form
from api.context import DB, REQUEST_ID, SETTINGS
from api.routing import Endpoint, Routes
from shared import access, users
from shared.db import projects as projects_db
from shared.db import users as users_db
from shared.db.identities import Identity
from shared.errors import BadRequest, FieldError, Forbidden, KmsError, NotFound

log = logging.getLogger("kms.web")
routes = Routes("web")
SESSION_COOKIE: Final = "kms_session"
HERE = Path(__file__).parent
CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
              "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: with it, a form POST sends "Origin: null"
    "Cache-Control": "no-store",
}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: every value is escaped
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Visit:
    """One request to a page: who asks, and (under /projects/{projectId}) as whom in which project."""

    request: web.Request
    session: users_db.Session | None
    identity: Identity | None = None
    project: projects_db.Project | None = None
    form: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> users_db.User:
        assert self.session is not None, "only signed-in pages have a user"
        return self.session.user

    @property
    def csrf(self) -> str:
        return self.session.csrf_token if self.session is not None else ""

    @property
    def me(self) -> Identity:
        assert self.identity is not None, "only pages under /projects/{projectId} act in a project"
        return self.identity

    @property
    def project_id(self) -> UUID:
        return self.me.project_id

    def allows(self, role: str) -> bool:
        return self.identity is not None and access.ROLE_RANK[self.identity.role] >= access.ROLE_RANK[role]

    def render(self, template: str, *, status: int = 200, **values: Any) -> web.Response:
        return render(self.request, template, status=status, visit=self, **values)

    def url(self, path: str = "") -> str:
        """A path under this visit's project."""
        return f"/projects/{self.project_id}{path}"


PageHandler = Callable[[Visit], Awaitable[web.StreamResponse]]


def redirect(location: str) -> web.Response:
    """A 303 See Other: after a form, the browser GETs the page that shows its outcome."""
    return web.Response(status=303, headers={"Location": location})


def secure_cookies(request: web.Request) -> bool:
    public_url = request.app[SETTINGS].public_url
    return request.secure or bool(public_url and public_url.startswith("https:"))


def render(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    values.setdefault("visit", None)
    values.setdefault("errors", {})
    values.setdefault("request_id", request.get(REQUEST_ID, ""))
    body = templates.get_template(template).render(**values)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    with_headers(response)
    return response


def with_headers(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def field_map(errors: list[FieldError], fields: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Field errors by the form field they concern: ``fields`` maps an error's field prefix (its dotted path
    as the service names it) to a form field; the rest are under ``""`` (shown above the form)."""
    shown: dict[str, list[str]] = {}
    for error in errors:
        target = ""
        for prefix, name in (fields or {}).items():
            if error.field == prefix or error.field.startswith((prefix + ".", prefix + "[")):
                target = name
                break
        shown.setdefault(target, []).append(error.message)
    return shown


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin (sent on every cross-site and same-site POST) is this site's, or absent."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    public_url = request.app[SETTINGS].public_url
    mine = {f"{request.scheme}://{request.host}"}
    if public_url:
        parts = urlsplit(public_url)
        mine.add(f"{parts.scheme}://{parts.netloc}")
    return origin in mine


def error_page(request: web.Request, err: KmsError, visit: Visit | None) -> web.Response:
    return render(request, "error.html", status=err.status, visit=visit, title=err.title, detail=err.detail)


def page(method: str, path: str, *, summary: str, json: bool = False, signed_in: bool = True
         ) -> Callable[[PageHandler], PageHandler]:
    """Registers a page (``json``: a status route the page's script polls, answering JSON)."""

    def register(handler: PageHandler) -> PageHandler:
        @functools.wraps(handler)
        async def serve(request: web.Request) -> web.StreamResponse:
            visit: Visit | None = None
            try:
                current = await users.session(request.app[DB], request.cookies.get(SESSION_COOKIE),
                                              request.app[SETTINGS].web_session_idle_seconds)
                if current is None and signed_in:
                    if json:
                        return with_headers(web.json_response({"error": "signed out"}, status=401))
                    target = request.path_qs if method == "GET" else "/"
                    return with_headers(redirect("/sign-in?next=" + quote(target, safe="/")))
                visit = Visit(request, current)
                if method == "POST":
                    visit.form = await read_form(request) if request.can_read_body else {}
                    if not _same_origin(request) or (
                            current is not None and not users.csrf_matches(current, visit.form.get("csrf"))):
                        raise Forbidden("this form was not sent from a page of this site (the CSRF check failed); "
                                        "go back, reload the page and send it again")
                if "projectId" in request.match_info and current is not None:
                    project_id = _path_uuid(request, "projectId")
                    visit.identity = await users.acting_as(request.app[DB], current.user, project_id)
                    visit.project = await projects_db.project_by_id(request.app[DB], project_id)
                response = await handler(visit)
            except KmsError as err:
                if json:
                    response = web.json_response({"error": err.detail}, status=err.status)
                else:
                    response = error_page(request, err, visit if visit and visit.session else None)
            return with_headers(response)

        routes.endpoints.append(_endpoint(method, path, summary, serve))
        return handler

    return register


def _endpoint(method: str, path: str, summary: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
              ) -> Endpoint:
    return Endpoint(method=method, path=path, summary=summary, handler=handler, public=True, tag=routes.tag)


def _path_uuid(request: web.Request, name: str) -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise NotFound("no such page") from None


def path_uuid(visit: Visit, name: str) -> UUID:
    return _path_uuid(visit.request, name)


def choice(form: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = form.get(name, "")
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}", [FieldError(name, "not a choice")])
    return value

