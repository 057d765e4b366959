"""Web UI sign-in, sessions, CSRF and security headers (issue 15), in Debian's chromium."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
import asyncpg
from aiohttp import web
from playwright.async_api import Browser, expect

from tests.api_client import Tenant
from tests.stack import Stack
from tests.web.conftest import PASSWORD, WebUser, sign_in

CSP_NEEDED = ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'")


async def test_cli_creates_a_user_who_signs_in_sees_their_project_and_signs_out(
        stack: Stack, api_url: str, tenant: Tenant, browser: Browser) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "admin", "user", "create", "--email", "Ops@Example.test",
         "--project", tenant.project_id, "--role", "issuer", "--password-stdin", "--json"],
        input=PASSWORD.encode() + b"\n", env=stack.env, capture_output=True, check=True, timeout=60)
    made = json.loads(out.stdout)
    assert made["email"] == "ops@example.test" and made["role"] == "issuer"

    page = await sign_in(browser, api_url, WebUser("ops@example.test", PASSWORD))
    await expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="issuer")
    await expect(row).to_contain_text("alpha")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "kms_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain http on loopback; Secure when served over TLS or KMS_PUBLIC_URL is https

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # The session ended on the server: its old cookie signs nobody in any more.
    context = await browser.new_context(base_url=api_url)
    await context.add_cookies([{"name": "kms_session", "value": cookie["value"], "url": api_url}])
    again = await context.new_page()
    await again.goto("/projects")
    await expect(again.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_cli_refuses_a_short_password_and_names_the_field(stack: Stack, tenant: Tenant) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "admin", "user", "create", "--email", "x@example.test",
         "--project", tenant.project_id, "--role", "viewer", "--password-stdin"],
        input=b"short\n", env=stack.env, capture_output=True, timeout=60)
    assert out.returncode == 1
    assert "password: use 12 to 200 characters" in out.stderr.decode()


async def test_a_wrong_password_is_refused_with_a_message_and_no_session(
        api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    user = await make_user(tenant.project_id, "viewer")
    context = await browser.new_context(base_url=api_url)
    page = await context.new_page()
    await page.goto("/projects")  # signed out: sent to the sign-in page, which comes back here afterwards
    await expect(page).to_have_url(f"{api_url}/sign-in?next=/projects")
    await page.get_by_label("E-mail address").fill(user.email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("wrong e-mail address or password")
    assert not [c for c in await context.cookies() if c["name"] == "kms_session"]


async def test_a_session_idle_past_its_expiry_is_signed_out(
        api_url: str, tenant: Tenant, make_user, browser: Browser, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    user = await make_user(tenant.project_id, "viewer")
    page = await sign_in(browser, api_url, user)
    # As if KMS_WEB_SESSION_IDLE_SECONDS had passed without a request.
    moved = await db.execute("UPDATE web_sessions SET expires_at = now() - interval '1 second'"
                             " WHERE user_id = (SELECT id FROM web_users WHERE email = $1)", user.email)
    assert moved == "UPDATE 1"
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await db.fetchval("SELECT count(*) FROM web_sessions s JOIN web_users u ON u.id = s.user_id"
                             " WHERE u.email = $1", user.email) == 0


async def test_another_projects_pages_are_a_404_page(
        api_url: str, tenant: Tenant, make_tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    other = await make_tenant("beta")
    user = await make_user(tenant.project_id, "admin")
    page = await sign_in(browser, api_url, user)
    answer = await page.goto(f"/projects/{other.project_id}/users")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="Not Found")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_text("no such project")


async def test_a_viewer_is_refused_the_users_page(
        api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "viewer"))
    answer = await page.goto(f"/projects/{tenant.project_id}/users")
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("needs the admin role")


async def test_an_admin_adds_a_user_in_the_ui_who_then_signs_in(
        api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    await page.goto(f"/projects/{tenant.project_id}/users")
    await page.get_by_label("E-mail address").fill("someone@localhost")
    await page.get_by_label("Password (12 characters or more)").fill("short")
    await page.get_by_role("button", name="Add user").click()
    # Both problems at once, each beside its field.
    await expect(page.locator("#email-errors")).to_contain_text("enter an e-mail address")
    await expect(page.locator("#password-errors")).to_contain_text("use 12 to 200 characters")
    await page.get_by_label("E-mail address").fill("new.viewer@example.test")
    await page.get_by_label("Password (12 characters or more)").fill(PASSWORD)
    await page.get_by_label("Role").select_option("viewer")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.get_by_role("status")).to_have_text("Created new.viewer@example.test.")
    await expect(page.get_by_role("row").filter(has_text="new.viewer@example.test")).to_contain_text("viewer")
    newcomer = await sign_in(browser, api_url, WebUser("new.viewer@example.test", PASSWORD))
    await expect(newcomer.get_by_role("row").filter(has_text="viewer")).to_contain_text("alpha")


async def _attacker_page(host: str, html: str) -> tuple[web.AppRunner, str]:
    """An attacker's site on ``host``: one page holding ``html``."""
    async def evil(request: web.Request) -> web.Response:
        return web.Response(text=f"<html><body>{html}</body></html>", content_type="text/html")

    attacker = web.Application()
    attacker.router.add_get("/", evil)
    runner = web.AppRunner(attacker)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}/"


def _forged_user_form(api_url: str, project_id: str, csrf: str = "guessed") -> str:
    return (f'<form method="post" action="{api_url}/projects/{project_id}/users">'
            '<input name="email" value="mallory@example.test"><input name="password" value="mallory-password-1">'
            f'<input name="role" value="admin"><input name="csrf" value="{csrf}"><button>go</button></form>')


async def test_a_cross_origin_form_post_is_refused_by_the_csrf_check(
        api_url: str, tenant: Tenant, make_user, browser: Browser, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    """An attacker's page on the same site but another origin (127.0.0.1, another port: the browser sends
    the SameSite=Strict cookie along) posts a form to a signed-in admin's users page: the browser shows
    the refusal, and no user is made."""
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    runner, url = await _attacker_page("127.0.0.1", _forged_user_form(api_url, tenant.project_id))
    try:
        await page.goto(url)
        await page.get_by_role("button", name="go").click()
        await expect(page.get_by_role("alert")).to_contain_text("the CSRF check failed")
        await expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    finally:
        await runner.cleanup()
    assert await db.fetchval("SELECT count(*) FROM web_users WHERE email = 'mallory@example.test'") == 0


async def test_a_cross_site_form_post_arrives_without_the_session(
        api_url: str, tenant: Tenant, make_user, browser: Browser, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    """From another site (localhost is not 127.0.0.1) the SameSite=Strict cookie stays home: the post
    lands on the sign-in page, and no user is made."""
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    runner, url = await _attacker_page("localhost", _forged_user_form(api_url, tenant.project_id))
    try:
        await page.goto(url)
        await page.get_by_role("button", name="go").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        await runner.cleanup()
    assert await db.fetchval("SELECT count(*) FROM web_users WHERE email = 'mallory@example.test'") == 0


async def test_a_post_with_the_session_but_a_wrong_csrf_token_is_refused(
        api_url: str, tenant: Tenant, make_user, browser: Browser, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    """The token, not only the Origin: a client that sends no Origin (not a browser) still needs it."""
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    cookie = next(c for c in await page.context.cookies() if c["name"] == "kms_session")
    form = {"email": "mallory@example.test", "password": "mallory-password-1", "role": "admin"}
    async with aiohttp.ClientSession(cookies={"kms_session": cookie["value"]}) as session:
        for sent in ({}, {"csrf": "guessed"}):
            async with session.post(f"{api_url}/projects/{tenant.project_id}/users", data={**form, **sent}) as r:
                assert r.status == 403 and "the CSRF check failed" in await r.text()
    assert await db.fetchval("SELECT count(*) FROM web_users WHERE email = 'mallory@example.test'") == 0


async def test_pages_carry_a_strict_csp_nosniff_and_frame_denial(api_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/sign-in", "/static/app.css", "/static/live.js"):
            async with session.get(api_url + path) as resp:
                assert resp.status == 200, path
                csp = resp.headers["Content-Security-Policy"]
                assert all(part in csp for part in CSP_NEEDED) and "unsafe-inline" not in csp, csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["X-Frame-Options"] == "DENY"
        async with session.get(api_url + "/projects", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in?next=/projects"


async def test_repeated_wrong_passwords_for_one_address_are_rate_limited(
        api_url: str, tenant: Tenant, make_user) -> None:  # type: ignore[no-untyped-def]
    """Failed sign-ins of one address share the failed-login bucket of a client id (30, then 429)."""
    user = await make_user(tenant.project_id, "viewer")
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(32):
            async with session.post(api_url + "/sign-in", data={"email": user.email, "password": "wrong"},
                                    allow_redirects=False) as r:
                statuses.append(r.status)
    assert statuses[:30] == [401] * 30 and statuses[30:] == [429, 429], statuses
