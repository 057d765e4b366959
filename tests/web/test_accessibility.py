"""Plain, accessible HTML: a label for every input, keyboard-only use, read-only pages without JavaScript,
and a certificate requested from a pasted CSR (issue 15)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import Browser, Page, expect

from tests.api_client import Tenant
from tests.pki_setup import make_pki
from tests.stack import Stack
from tests.web.conftest import sign_in


async def _unlabelled_controls(page: Page) -> list[str]:
    """Inputs, selects and textareas (hidden ones aside) that no label names."""
    found: list[str] = await page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea')].filter(e => !e.labels || e.labels.length === 0)
        .map(e => e.outerHTML)""")
    return found


async def test_every_form_control_has_a_label_and_signing_in_works_from_the_keyboard(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    user = await make_user(tenant.project_id, "admin")
    context = await browser.new_context(base_url=api_url)
    page = await context.new_page()
    await page.goto("/sign-in")
    assert await _unlabelled_controls(page) == []
    # Keyboard only: the skip link first, the site's name, then the fields in order; Enter submits.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Hanzo KMS · certificates")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("E-mail address")).to_be_focused()
    # The focus is visible: a 3px outline (app.css :focus-visible).
    assert await page.evaluate("getComputedStyle(document.activeElement).outlineWidth") == "3px"
    await page.keyboard.type(user.email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(user.password)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
    for path in ("/profiles", f"/profiles/{pki.profile_id}/request", "/certificates", "/cas", "/policies", "/users"):
        await page.goto(f"/projects/{tenant.project_id}{path}")
        assert await _unlabelled_controls(page) == [], path


async def test_a_certificate_from_a_pasted_csr_issues_and_is_readable_without_javascript(
        worker: Stack, api_url: str, tenant: Tenant, make_user, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    pki = await make_pki(tenant.admin, tenant.project_id)
    user = await make_user(tenant.project_id, "issuer")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    page = await sign_in(browser, api_url, user)
    await page.goto(f"/projects/{pki.project_id}/profiles/{pki.profile_id}/request")
    await page.get_by_label("Or paste a CSR").fill(csr.public_bytes(serialization.Encoding.PEM).decode())
    await page.get_by_role("button", name="Request certificate").click()
    await expect(page.locator("#status")).to_have_text("issued", timeout=30_000)
    url = await page.get_by_role("link", name="View the certificate").get_attribute("href")
    assert url is not None

    # The same session in a browser without JavaScript: the read-only pages read the same.
    cookies = await page.context.cookies()
    plain = await browser.new_context(base_url=api_url, java_script_enabled=False)
    await plain.add_cookies(cookies)  # type: ignore[arg-type]
    bare = await plain.new_page()
    await bare.goto(url)
    await expect(bare.locator("#certificate-status")).to_have_text("active")
    await expect(bare.locator("#certificate")).to_contain_text("from a CSR: the service never held it")
    await expect(bare.get_by_role("link", name="Private key (PEM)")).to_have_count(0)  # there is none
    await bare.goto(f"/projects/{pki.project_id}/certificates")
    await expect(bare.get_by_role("link", name="csr.example.test")).to_be_visible()
    request_page = url.replace("/certificates/", "/requests/")  # not a request id: a 404 page, still readable
    answer = await bare.goto(request_page)
    assert answer is not None and answer.status == 404
