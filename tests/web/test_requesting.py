"""Requesting a certificate in the browser: the policy's violations beside their fields, all at once, then
the request's page following it live until it is issued (issue 15)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from playwright.async_api import Browser, Page, expect

from tests.api_client import Tenant
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack
from tests.web.conftest import WebUser, screenshot, sign_in


async def _request_form(page: Page, pki: Pki) -> None:
    await page.goto(f"/projects/{pki.project_id}/profiles")
    await page.get_by_role("link", name="Request a certificate from web").click()
    await expect(page.get_by_role("heading", name="Request a certificate from web")).to_be_visible()


async def test_profiles_page_says_the_policy_in_words(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "viewer"))
    await page.goto(f"/projects/{pki.project_id}/profiles")
    policy = page.get_by_role("region", name="web").get_by_role("listitem")
    await expect(policy).to_contain_text([
        "Common name: may be *.example.test, localhost", "DNS names: may be *.example.test, localhost",
        "IP addresses: may be 127.0.0.1", "Key types: any the service supports", "Maximum lifetime: 90d",
        "Default lifetime: 30 days; default key type: EC_prime256v1"])
    # A viewer may read, not request.
    await expect(page.get_by_role("link", name="Request a certificate from web")).to_have_count(0)
    answer = await page.goto(f"/projects/{pki.project_id}/profiles/{pki.profile_id}/request")
    assert answer is not None and answer.status == 403


async def test_violations_show_beside_their_fields_at_once_then_the_fixed_request_issues_live(
        stack: Stack, worker: Stack, api_without_broker: str, tenant: Tenant, make_user, browser: Browser,
        ring_doorbell: Callable[[str], Awaitable[None]]) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    user: WebUser = await make_user(tenant.project_id, "issuer")
    # This API's doorbell is broken, so the request is seen pending first; the test rings the real one.
    page = await sign_in(browser, api_without_broker, user)
    await _request_form(page, pki)
    await page.get_by_label("Common name").fill("shop.example.org")
    await page.get_by_label("Subject alternative names").fill("shop.example.org\n10.0.0.1")
    await page.get_by_label("Lifetime").fill("400d")
    await page.get_by_role("button", name="Request certificate").click()

    await expect(page.locator("#commonName-errors")).to_contain_text(
        "common_name 'shop.example.org' matches no allowed pattern (allowed: *.example.test, localhost)")
    await expect(page.locator("#altNames-errors li")).to_contain_text([
        "dns_name 'shop.example.org' matches no allowed pattern", "ip_address '10.0.0.1' matches no allowed pattern"])
    await expect(page.locator("#ttl-errors")).to_contain_text("ttl 400d exceeds the policy's maximum validity of 90d")
    await expect(page.get_by_label("Common name")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Common name")).to_have_value("shop.example.org")  # the input is kept
    await screenshot(page, "web-request-form")

    await page.get_by_label("Common name").fill("shop.example.test")
    await page.get_by_label("Subject alternative names").fill("shop.example.test\n127.0.0.1")
    await page.get_by_label("Lifetime").fill("30d")
    await page.get_by_role("button", name="Request certificate").click()
    await expect(page.get_by_role("heading", name="Certificate request")).to_be_visible()
    status = page.locator("#status")
    await expect(status).to_have_text("pending")
    await expect(page.locator("#request")).to_contain_text("shop.example.test, 127.0.0.1")
    await screenshot(page, "web-live-request")
    await page.evaluate("window.stillTheSamePage = true")  # gone if the page reloads

    await ring_doorbell(page.url.rsplit("/", 1)[1])
    await expect(status).to_have_text("issued", timeout=30_000)
    await expect(page.get_by_role("link", name="View the certificate")).to_be_visible()
    assert await page.evaluate("window.stillTheSamePage") is True


async def test_a_malformed_csr_is_refused_beside_the_csr_field(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    await _request_form(page, pki)
    await page.get_by_label("Or paste a CSR").fill("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n"
                                                   "-----END CERTIFICATE REQUEST-----")
    await page.get_by_role("button", name="Request certificate").click()
    await expect(page.locator("#csr-errors")).to_have_text(re.compile(r"base64|PEM|PKCS"))
    await expect(page.get_by_label("Or paste a CSR")).to_have_attribute("aria-invalid", "true")


async def test_another_projects_request_is_a_404_page(
        worker: Stack, api_url: str, tenant: Tenant, make_tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    await _request_form(page, pki)
    await page.get_by_label("Common name").fill("a.example.test")
    await page.get_by_role("button", name="Request certificate").click()
    await expect(page.get_by_role("heading", name="Certificate request")).to_be_visible()
    request_id = page.url.rsplit("/", 1)[1]
    other = await make_tenant("beta")
    outsider = await sign_in(browser, api_url, await make_user(other.project_id, "admin"))
    answer = await outsider.goto(f"/projects/{other.project_id}/requests/{request_id}")
    assert answer is not None and answer.status == 404
    await expect(outsider.get_by_role("alert")).to_have_text("no such certificate request in this project")
