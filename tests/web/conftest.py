"""Fixtures of the web UI tests: Debian's chromium driven by Playwright, and web users made in-process.

The browser is the system's (``/usr/bin/chromium``, installed by scripts/test.sh when missing), launched
headless through its executable path: Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from playwright.async_api import Browser, Page, async_playwright

from shared import users
from shared.db.pool import create_pool
from tests.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class WebUser:
    email: str
    password: str


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/test.sh, or apt-get install -y chromium")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                            args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def make_user(stack: Stack) -> Callable[[str, str], Awaitable[WebUser]]:
    """A web user with ``role`` in the project ``project_id`` (the CLI that does the same has its own test)."""
    async def make(project_id: str, role: str) -> WebUser:
        email = f"{role}-{secrets.token_hex(4)}@example.test"
        pool = await create_pool(stack.database_url, min_size=1, max_size=1)
        try:
            await users.create_user(pool, email=email, password=PASSWORD, project_id=UUID(project_id), role=role,
                                    actor="test")
        finally:
            await pool.close()
        return WebUser(email, PASSWORD)
    return make


async def sign_in(browser: Browser, api_url: str, user: WebUser) -> Page:
    """A new browser context (its own cookies) signed in as ``user``, on the projects page."""
    context = await browser.new_context(base_url=api_url, accept_downloads=True)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_label("E-mail address").fill(user.email)
    await page.get_by_label("Password").fill(user.password)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/projects"), (page.url, await page.content())
    return page


# An API whose requests stay pending until a test rings the real broker (a page is seen pending first),
# and the bell: the issuance tests' fixtures, shared.


async def screenshot(page: Page, name: str) -> None:
    """With KMS_WEB_SCREENSHOTS set to a directory (the README's are in docs/), saves a PNG of the page."""
    where = os.environ.get("KMS_WEB_SCREENSHOTS")
    if where:
        await page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)
