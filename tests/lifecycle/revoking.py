"""Revoking over HTTP and reading the public CRL as a relying party does. Not a test module."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from cryptography import x509

from tests.api_client import ApiClient
from tests.issuance.checkers import run
from tests.issuance.issuing import CERTIFICATES, issued, server_key_attributes
from tests.pki_setup import Pki

LINT_CRL = str(Path(sys.executable).with_name("lint_crl"))
CRL = "/api/v1/cert-manager/crl"


async def issue(client: ApiClient, pki: Pki, name: str) -> dict[str, object]:
    return await issued(client, pki.profile_id, attributes=server_key_attributes(name))


async def revoke(client: ApiClient, certificate_id: str, reason: str = "KEY_COMPROMISE"):  # type: ignore[no-untyped-def]
    return await client.post(f"{CERTIFICATES}/{certificate_id}/revoke", {"revocationReason": reason})


async def public_crl(client: ApiClient, ca_id: str) -> x509.CertificateRevocationList:
    r = await client.with_token(None).get(f"{CRL}/{ca_id}")
    assert r.status == 200, (r.status, r.body)
    return x509.load_pem_x509_crl(r.body.encode())


async def public_crl_der(client: ApiClient, ca_id: str) -> bytes:
    async with client.session.get(f"{client.base}{CRL}/{ca_id}/der") as resp:
        assert resp.status == 200, resp.status
        assert resp.content_type == "application/pkix-crl"
        return await resp.read()


async def crl_listing(client: ApiClient, ca_id: str, serial_hex: str, timeout: float = 5.0
                      ) -> tuple[x509.CertificateRevocationList, float]:
    """The CA's public CRL once it lists ``serial_hex``, and how many seconds that took."""
    start = time.monotonic()
    while True:
        crl = x509.load_der_x509_crl(await public_crl_der(client, ca_id))
        if crl.get_revoked_certificate_by_serial_number(int(serial_hex, 16)) is not None:
            return crl, time.monotonic() - start
        assert time.monotonic() - start < timeout, f"serial {serial_hex} not on the CRL after {timeout} s"
        await asyncio.sleep(0.1)


async def crl_lint_errors(der: bytes) -> list[str]:
    """ERROR and FATAL findings of pkilint's RFC 5280 CRL linter."""
    _, out = await run(LINT_CRL, "lint", "-t", "CRL", "-p", "PKIX", "-f", "JSON", "-s", "ALL",
                       "--document-format", "DER", "-", stdin=der)
    try:
        results = json.loads(out)["results"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"lint_crl did not lint the CRL: {out[:2000]}") from exc
    assert results, "lint_crl ran no validator"
    return [f"{r['validator']} @ {r['node_path']}: {f['code']} ({f['severity']})"
            for r in results for f in r["finding_descriptions"] if f["severity"] in ("ERROR", "FATAL")]
