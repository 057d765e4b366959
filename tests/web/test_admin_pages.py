"""Batches (a progress bar that follows the batch live, each item's result), CAs and policies in the
browser: every role views them, admins create CAs and policies, disable CAs, delete unused policies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
from playwright.async_api import Browser, expect

from tests.api_client import ApiClient, Tenant
from tests.pki_setup import make_pki
from tests.stack import Stack
from tests.web.conftest import sign_in

BATCHES = "/api/v1/cert-manager/certificate-batches"


async def test_a_batch_page_follows_progress_live_and_lists_each_items_result(
        worker: Stack, api_without_broker: str, tenant: Tenant, make_user, browser: Browser, db: asyncpg.Connection,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    items = [{"attributes": {"commonName": f"b{i}.example.test"}} for i in range(3)]
    items.append({"attributes": {"commonName": "outside.example.org"}})  # refused at submission
    async with aiohttp.ClientSession() as session:
        # Submitted to the API whose doorbell is broken: the items wait until the test rings the real one.
        admin = ApiClient(session, api_without_broker, tenant.admin.token)
        made = await admin.post(BATCHES, {"profileId": pki.profile_id, "items": items})
        assert made.status == 202, made.body
    batch_id = made.body["batchId"]
    page = await sign_in(browser, api_without_broker, await make_user(tenant.project_id, "viewer"))
    await page.goto(f"/projects/{tenant.project_id}/batches")
    await page.get_by_role("link", name=batch_id).click()
    progress = page.get_by_label("Progress")
    await expect(progress).to_have_attribute("max", "4")
    await expect(progress).to_have_js_property("value", 1)  # the refused item is final already
    await expect(page.locator("#batch-status")).to_have_text("running")
    await page.evaluate("window.stillTheSamePage = true")

    pending = await db.fetch("SELECT id FROM certificate_requests WHERE batch_id = $1 AND status = 'pending'"
                             " ORDER BY batch_index", batch_id)
    assert len(pending) == 3
    await ring_doorbell(str(pending[0]["id"]))
    await expect(progress).to_have_js_property("value", 2, timeout=30_000)
    for row in pending[1:]:
        await ring_doorbell(str(row["id"]))
    await expect(page.locator("#batch-status")).to_have_text("completed", timeout=30_000)
    await expect(progress).to_have_js_property("value", 4)
    await expect(page.locator("#batch-issued")).to_have_text("3")
    await expect(page.locator("#batch-failed")).to_have_text("1")
    assert await page.evaluate("window.stillTheSamePage") is True

    await page.get_by_role("link", name="Show every item's result").click()
    rows = page.locator("#items tbody tr")
    await expect(rows).to_have_count(4)
    await expect(rows.nth(0)).to_contain_text("b0.example.test")
    await expect(rows.nth(3)).to_contain_text("failed")
    await expect(rows.nth(3)).to_contain_text("outside.example.org")
    await rows.nth(1).get_by_role("link").click()
    await expect(page.locator("#certificate-status")).to_have_text("active")


async def test_an_admin_creates_a_root_ca_and_disables_it_a_viewer_may_only_look(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    await page.goto(f"/projects/{tenant.project_id}/cas")
    await page.get_by_label("Name", exact=True).fill("ui-root")
    await page.get_by_label("Common name").fill("UI Root")
    await page.get_by_label("Lifetime").fill("")
    await page.get_by_role("button", name="Create CA").click()
    await expect(page.locator("#ttl-errors, #form-errors").first).to_be_visible()  # no lifetime: refused
    await page.get_by_label("Lifetime").fill("5y")
    await page.get_by_role("button", name="Create CA").click()
    row = page.locator("#cas tbody tr").filter(has_text="ui-root")
    for _ in range(60):
        if "active" in (await row.inner_text()):
            break
        await page.wait_for_timeout(500)
        await page.reload()
    await expect(row).to_contain_text("UI Root")
    await expect(row.locator(".status")).to_have_text("active")
    await row.get_by_role("button", name="Disable ui-root").click()
    await expect(row.locator(".status")).to_have_text("disabled")

    viewer = await sign_in(browser, api_url, await make_user(tenant.project_id, "viewer"))
    await viewer.goto(f"/projects/{tenant.project_id}/cas")
    await expect(viewer.locator("#cas")).to_contain_text("ui-root")
    await expect(viewer.get_by_role("button", name="Create CA")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Enable ui-root")).to_have_count(0)
    csrf = await viewer.locator("input[name=csrf]").first.input_value()
    answer = await viewer.request.post(f"/projects/{tenant.project_id}/cas",
                                       form={"csrf": csrf, "name": "v-root", "type": "root", "commonName": "V",
                                             "keyAlgorithm": "EC_prime256v1", "ttl": "1y"})
    assert answer.status == 403


async def test_an_admin_creates_a_policy_shown_in_words_and_deletes_it(
        api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "admin"))
    await page.goto(f"/projects/{tenant.project_id}/policies")
    await page.get_by_label("Name", exact=True).fill("ui-policy")
    await page.get_by_label("Rules").fill("{not json")
    await page.get_by_role("button", name="Create policy").click()
    await expect(page.locator("#rules-errors")).to_contain_text("not JSON")
    await page.get_by_label("Rules").fill('{"subject": [{"type": "common_name", "allowed": ["*.corp.test"]}],'
                                          ' "validity": {"max": "30d"}}')
    await page.get_by_role("button", name="Create policy").click()
    section = page.get_by_role("region", name="ui-policy")
    await expect(section).to_contain_text("Common name: may be *.corp.test")
    await expect(section).to_contain_text("Maximum lifetime: 30d")
    await section.get_by_role("button", name="Delete ui-policy").click()
    await expect(page.get_by_role("region", name="ui-policy")).to_have_count(0)
