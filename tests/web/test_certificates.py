"""A certificate's page in the browser: download the bundle (parsed), revoke it (the page says revoked,
the CRL has it), what a viewer sees, another project's certificate, stored XSS, and the list's filters."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, Page, expect

from tests.api_client import Tenant
from tests.pki_setup import OPEN_POLICY, Pki, make_pki
from tests.stack import Stack
from tests.web.conftest import screenshot, sign_in


async def _issue(page: Page, pki: Pki, common_name: str, alt_names: str = "") -> str:
    """Requests a certificate in the form, waits on its live page until issued; the certificate's URL."""
    await page.goto(f"/projects/{pki.project_id}/profiles/{pki.profile_id}/request")
    await page.get_by_label("Common name").fill(common_name)
    await page.get_by_label("Subject alternative names").fill(alt_names or common_name)
    await page.get_by_role("button", name="Request certificate").click()
    await expect(page.locator("#status")).to_have_text("issued", timeout=30_000)
    link = page.get_by_role("link", name="View the certificate")
    href = await link.get_attribute("href")
    assert href is not None
    return href


async def _download(page: Page, name: str, where: Path) -> str:
    async with page.expect_download() as info:
        await page.get_by_role("link", name=name).click()
    download = await info.value
    target = where / download.suggested_filename
    await download.save_as(target)
    return target.read_text()


async def _crl_serials(api_url: str, ca_id: str) -> set[int]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{api_url}/api/v1/cert-manager/crl/{ca_id}/der") as resp:
        if resp.status != 200:
            return set()
        crl = x509.load_der_x509_crl(await resp.read())
    return {entry.serial_number for entry in crl}


async def test_issue_download_the_bundle_and_revoke_it_onto_the_crl(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser, tmp_path: Path,
        db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    user = await make_user(tenant.project_id, "issuer")
    page = await sign_in(browser, api_url, user)
    await page.goto(await _issue(page, pki, "pay.example.test", "pay.example.test\n127.0.0.1"))
    await expect(page.locator("#certificate-status")).to_have_text("active")
    await expect(page.locator("#alt-names")).to_contain_text("pay.example.test")
    await expect(page.locator("#alt-names")).to_contain_text("127.0.0.1")
    await expect(page.get_by_label("Lifetime used (29 days left)")).to_be_visible()
    await screenshot(page, "web-certificate")

    bundle = await _download(page, "Bundle (PEM, with the key)", tmp_path)
    certs = x509.load_pem_x509_certificates(bundle.encode())
    key = serialization.load_pem_private_key(bundle[bundle.index("-----BEGIN PRIVATE KEY"):].encode(), None)
    leaf = certs[0]
    assert leaf.public_key() == key.public_key()
    assert leaf.subject.rfc4514_string() == "CN=pay.example.test"
    assert [c.subject.rfc4514_string() for c in certs[1:]] == ["CN=web Test Issuing CA", "CN=web Test Root"]
    # The key handed out is audited, under the user's name.
    read_by = await db.fetch("SELECT actor FROM audit_events WHERE action = 'certificate.private_key.read'"
                             " AND subject_id = $1", page.url.rsplit("/", 1)[1])
    user_id = await db.fetchval("SELECT id FROM web_users WHERE email = $1", user.email)
    assert [r["actor"] for r in read_by] == [f"user:{user_id}"]
    assert int((await page.locator("#serial").text_content() or "").replace(":", ""), 16) == leaf.serial_number

    await page.get_by_label("Reason").select_option("KEY_COMPROMISE")
    await page.get_by_role("button", name="Revoke").click()
    await expect(page.locator("#certificate-status")).to_have_text("revoked")
    await expect(page.locator("#certificate")).to_contain_text("(KEY_COMPROMISE)")
    await expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    deadline = time.monotonic() + 30
    while leaf.serial_number not in await _crl_serials(api_url, pki.issuing_id):
        assert time.monotonic() < deadline, "the revoked serial never reached the CRL"
        await asyncio.sleep(0.5)


async def test_a_viewer_sees_no_key_download_and_cannot_revoke(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    issuer = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    url = await _issue(issuer, pki, "view.example.test")
    viewer = await sign_in(browser, api_url, await make_user(tenant.project_id, "viewer"))
    await viewer.goto(url)
    await expect(viewer.locator("#certificate-status")).to_have_text("active")
    await expect(viewer.get_by_role("link", name="Private key (PEM)")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Revoke")).to_have_count(0)
    bundle = await _download(viewer, "Bundle (PEM)", tmp_path)
    assert "PRIVATE KEY" not in bundle and len(x509.load_pem_x509_certificates(bundle.encode())) == 3
    answer = await viewer.goto(url + "/download/key")
    assert answer is not None and answer.status == 403
    await expect(viewer.get_by_role("alert")).to_contain_text("only shown to issuers and admins")


async def test_another_projects_certificate_url_is_a_404_page(
        worker: Stack, api_url: str, tenant: Tenant, make_tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    issuer = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    url = await _issue(issuer, pki, "mine.example.test")
    certificate_id = url.rsplit("/", 1)[1]
    other = await make_tenant("beta")
    outsider = await sign_in(browser, api_url, await make_user(other.project_id, "admin"))
    for path in (url, f"/projects/{other.project_id}/certificates/{certificate_id}",
                 f"/projects/{other.project_id}/certificates/{certificate_id}/download/bundle"):
        answer = await outsider.goto(path)
        assert answer is not None and answer.status == 404, path
        await expect(outsider.get_by_role("heading", name="Not Found")).to_be_visible()
    # Nor can it be revoked from there (the form is posted with the outsider's own CSRF token).
    csrf = await outsider.locator("input[name=csrf]").first.input_value()
    response = await outsider.request.post(f"/projects/{other.project_id}/certificates/{certificate_id}/revoke",
                                           form={"revocationReason": "KEY_COMPROMISE", "csrf": csrf})
    assert response.status == 404
    await issuer.goto(url)
    await expect(issuer.locator("#certificate-status")).to_have_text("active")


async def test_a_script_in_a_common_name_is_shown_as_text_and_never_runs(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    policy = {**OPEN_POLICY, "subject": [{"type": "common_name", "allowed": ["*"]}]}
    pki = await make_pki(tenant.admin, tenant.project_id, policy=policy, slug="xss")
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    attack = "<script>alert(1)</script><img src=x onerror=alert(2)>"  # a CN holds 64 characters at most
    url = await _issue(page, pki, attack, "x.example.test")
    for path in (url, f"/projects/{pki.project_id}/certificates", f"/projects/{pki.project_id}/profiles"):
        await page.goto(path)
        await expect(page.locator("main")).to_be_visible()
        await page.wait_for_load_state("load")
        assert dialogs == [], path
    await page.goto(url)
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Certificate {attack}")
    await page.goto(f"/projects/{pki.project_id}/certificates")
    await expect(page.get_by_role("link", name=attack)).to_be_visible()
    assert await page.locator("main script, main img").count() == 0
    assert dialogs == []


async def test_the_list_filters_by_status_profile_and_expiry_and_pages(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    first = await _issue(page, pki, "one.example.test")
    await _issue(page, pki, "two.example.test")
    await page.goto(first)
    await page.get_by_role("button", name="Revoke").click()
    await expect(page.locator("#certificate-status")).to_have_text("revoked")

    await page.goto(f"/projects/{pki.project_id}/certificates")
    table = page.locator("#certificates tbody")
    await expect(table.get_by_role("row")).to_have_count(2)
    await expect(table.get_by_role("row").first).to_contain_text("two.example.test")  # newest first
    await page.get_by_label("Status").select_option("revoked")
    await page.get_by_role("button", name="Filter").click()
    await expect(table.get_by_role("row")).to_have_count(1)
    await expect(table).to_contain_text("one.example.test")
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Expiring within (days)").fill("10")
    await page.get_by_role("button", name="Filter").click()
    await expect(table).to_contain_text("No certificate matches.")  # both last 30 days
    await page.get_by_label("Expiring within (days)").fill("31")
    await page.get_by_label("Profile").select_option(label="web")
    await page.get_by_role("button", name="Filter").click()
    await expect(table.get_by_role("row")).to_have_count(1)  # the active one; the revoked one is not expiring
    await expect(table).to_contain_text("two.example.test")

    # A page at a time (one row a page here), each after the last row of the one before.
    await page.goto(f"/projects/{pki.project_id}/certificates?limit=1")
    await expect(table.get_by_role("row")).to_have_count(1)
    await expect(table).to_contain_text("two.example.test")
    await page.get_by_role("link", name="Next page").click()
    await expect(table).to_contain_text("one.example.test")
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    await page.get_by_role("link", name="First page").click()
    await expect(table).to_contain_text("two.example.test")

    # A certificate deleted over the API is gone from the list, and its page is a 404 page.
    deleted = await tenant.admin.delete(f"/api/v1/cert-manager/certificates/{first.rsplit('/', 1)[1]}")
    assert deleted.status == 200, deleted.body
    await page.goto(f"/projects/{pki.project_id}/certificates")
    await expect(table.get_by_role("row")).to_have_count(1)
    await expect(table).to_contain_text("two.example.test")
    answer = await page.goto(first)
    assert answer is not None and answer.status == 404


async def test_renew_makes_a_new_certificate_linked_to_the_old_which_stays_active(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    page = await sign_in(browser, api_url, await make_user(tenant.project_id, "issuer"))
    old = await _issue(page, pki, "renew.example.test")
    await page.goto(old)
    await page.get_by_role("button", name="Renew").click()
    await expect(page.locator("#status")).to_have_text("issued", timeout=30_000)
    await page.get_by_role("link", name="View the certificate").click()
    await expect(page.locator("#certificate")).to_contain_text("renew.example.test")
    await page.get_by_role("link", name="the previous certificate").click()
    await expect(page.locator("#certificate-status")).to_have_text("active")
    await expect(page.get_by_role("link", name="its successor")).to_be_visible()
