"""Signing in and out, the projects one belongs to, and (for a project's admins) its users."""

from __future__ import annotations

from aiohttp import web

from api.context import DB, RATE_LIMITER, SETTINGS
from api.web.base import SESSION_COOKIE, Visit, field_map, page, redirect, secure_cookies
from shared import access, users
from shared.db import users as users_db
from shared.errors import Forbidden, KmsError, Unauthorized


def _next(target: str | None) -> str:
    """Only a path of this site (never ``//elsewhere`` or a URL) is followed after signing in."""
    # Browsers drop tabs and newlines inside URLs ("/\t/elsewhere" becomes "//elsewhere"), so no control
    # character or space passes either.
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and all(ord(ch) > 0x20 and ord(ch) != 0x7F for ch in target)):
        return target
    return "/projects"


@page("GET", "/", summary="The web UI: its projects page (or the sign-in page)")
async def home(visit: Visit) -> web.StreamResponse:
    return redirect("/projects")


@page("GET", "/sign-in", summary="The sign-in page", signed_in=False)
async def sign_in_page(visit: Visit) -> web.StreamResponse:
    if visit.session is not None:
        return redirect("/projects")
    return visit.render("sign_in.html", next=_next(visit.request.query.get("next")), email="")


@page("POST", "/sign-in", summary="Sign in with an e-mail address and a password", signed_in=False)
async def sign_in(visit: Visit) -> web.StreamResponse:
    request = visit.request
    email, password = visit.form.get("email", ""), visit.form.get("password", "")
    target = _next(visit.form.get("next"))
    # Failed sign-ins of one address draw from the bucket failed logins of one client id do (from any
    # source; the per-source limit was taken by the rate limit middleware): a guess costs a token until
    # it succeeds.
    limiter, key = request.app[RATE_LIMITER], "web:" + users.normalise_email(email)
    await limiter.login_begins(key)
    try:
        new = await users.sign_in(request.app[DB], email, password, request.app[SETTINGS].web_session_idle_seconds)
    except Unauthorized as err:
        return visit.render("sign_in.html", status=401, next=target, email=email, errors={"": [err.detail]})
    await limiter.login_succeeded(key)
    response = redirect(target)
    # No Max-Age: a browser session cookie; the server ends the session when idle (web_session_idle_seconds).
    response.set_cookie(SESSION_COOKIE, new.cookie_value, httponly=True, samesite="Strict", path="/",
                        secure=secure_cookies(request))
    return response


@page("POST", "/sign-out", summary="Sign out: the session ends on the server")
async def sign_out(visit: Visit) -> web.StreamResponse:
    await users.sign_out(visit.request.app[DB], visit.request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@page("GET", "/projects", summary="The projects the signed-in user has a role in")
async def projects(visit: Visit) -> web.StreamResponse:
    memberships = await users_db.memberships(visit.request.app[DB], visit.user.id)
    return visit.render("projects.html", memberships=memberships)


@page("GET", "/projects/{projectId}", summary="A project: its certificate profiles")
async def project(visit: Visit) -> web.StreamResponse:
    return redirect(visit.url("/profiles"))


async def _users_page(visit: Visit, *, status: int = 200, errors: dict[str, list[str]] | None = None,
                      created: str | None = None) -> web.StreamResponse:
    if not visit.allows("admin"):
        raise Forbidden(f"the users page needs the admin role; you are {visit.me.role} in this project")
    members = await users_db.project_members(visit.request.app[DB], visit.project_id)
    return visit.render("users.html", status=status, members=members, errors=errors or {}, created=created,
                        form=visit.form, roles=list(access.ROLE_RANK))


@page("GET", "/projects/{projectId}/users", summary="A project's web users (admins)")
async def users_page(visit: Visit) -> web.StreamResponse:
    return await _users_page(visit)


@page("POST", "/projects/{projectId}/users", summary="Create a web user of the project (admins)")
async def create_user(visit: Visit) -> web.StreamResponse:
    if not visit.allows("admin"):
        raise Forbidden(f"creating users needs the admin role; you are {visit.me.role} in this project")
    form = visit.form
    try:
        user = await users.create_user(visit.request.app[DB], email=form.get("email", ""),
                                       password=form.get("password", ""), project_id=visit.project_id,
                                       role=form.get("role", ""), actor=users.actor(visit.user))
    except KmsError as err:
        errors = field_map(err.errors, {"email": "email", "password": "password", "role": "role"})
        return await _users_page(visit, status=err.status, errors=errors or {"": [err.detail]})
    return await _users_page(visit, created=user.email)
