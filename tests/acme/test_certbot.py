"""Real certbot, run as users run it, against a profile's ACME server (DESIGN.md 8, issue 12 "must show"
1): ``certonly --standalone`` over http-01 with external account binding, ``renew --force-renewal``,
``revoke``; the certificates verify to the CA root, pass pkilint's RFC 5280 lint, and the revoked
serial is on the CA's CRL and answered ``revoked`` by OCSP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from tests.acme.support import AcmeWorld
from tests.api_client import ApiClient
from tests.issuance.checkers import openssl_verify, pkilint_errors
from tests.pki_setup import PROFILES

NAME = "web.example.test"
# certbot is a test dependency, installed next to the interpreter running the tests.
CERTBOT = str(Path(sys.executable).with_name("certbot"))
CRL = "/api/v1/cert-manager/crl/{ca_id}/der"


def certbot(world: AcmeWorld, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [CERTBOT, *args, "--non-interactive", "--config-dir", str(home / "config"),
            "--work-dir", str(home / "work"), "--logs-dir", str(home / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"certbot {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _files(home: Path) -> dict[str, Path]:
    live = home / "config" / "live" / NAME
    return {"cert": live / "cert.pem", "chain": live / "chain.pem", "fullchain": live / "fullchain.pem"}


async def _checked(world: AcmeWorld, home: Path) -> x509.Certificate:
    """The live certificate: it verifies to the CA root and has no pkilint ERROR or FATAL finding."""
    files = _files(home)
    root = home / "root.pem"
    root.write_text(world.root_pem)
    pem = files["cert"].read_text()
    code, out = await openssl_verify(home / "verify", world.root_pem, files["chain"].read_text(), pem,
                                     purpose="sslserver")
    assert code == 0 and ": OK" in out, out
    assert await pkilint_errors(pem) == []
    return x509.load_pem_x509_certificate(pem.encode())


async def _profile_certificates(world: AcmeWorld) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        admin = ApiClient(session, world.api_url, world.admin_token)
        r = await admin.get(f"{PROFILES}/{world.profile_id}/certificates", params={"limit": "100"})
        assert r.status == 200, r.body
        return {c["serialNumber"]: c for c in r.body["certificates"]}


def _crl_serials(world: AcmeWorld) -> set[int]:
    import urllib.request

    url = world.api_url + CRL.format(ca_id=world.issuing_id)
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (the stack's own http URL)
        crl = x509.load_der_x509_crl(resp.read())
    return {r.serial_number for r in crl}


def test_certbot_obtains_renews_and_revokes_with_eab_over_http01(acme_world: AcmeWorld, tmp_path: Path) -> None:
    server = ["--server", acme_world.directory_url()]
    port = ["--http-01-port", str(acme_world.http01_port), "--http-01-address", "127.0.0.1"]
    certbot(acme_world, tmp_path, "certonly", "--standalone", "--preferred-challenges", "http", *server, *port,
            "--agree-tos", "--email", "ops@example.test", "--eab-kid", acme_world.eab_kid,
            "--eab-hmac-key", acme_world.eab_secret, "-d", NAME)
    first = asyncio.run(_checked(acme_world, tmp_path))
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NAME]

    certbot(acme_world, tmp_path, "renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", NAME,
            *port)
    second = asyncio.run(_checked(acme_world, tmp_path))
    assert second.serial_number != first.serial_number
    # The re-order of the same names by the same account is a renewal: linked both ways, as the API's are.
    by_serial = asyncio.run(_profile_certificates(acme_world))
    old, new = by_serial[format(first.serial_number, "x")], by_serial[format(second.serial_number, "x")]
    assert new["renewedFromCertificateId"] == old["id"] and old["renewedByCertificateId"] == new["id"]

    certbot(acme_world, tmp_path, "revoke", "--cert-path", str(_files(tmp_path)["cert"]), *server,
            "--reason", "keycompromise", "--no-delete-after-revoke")
    deadline = time.monotonic() + 5  # DESIGN.md invariant 9: on the CRL within seconds
    while second.serial_number not in _crl_serials(acme_world):
        assert time.monotonic() < deadline, "the revoked serial is not on the CRL within 5 s"
        time.sleep(0.2)
    assert first.serial_number not in _crl_serials(acme_world)
    # ... and OCSP, asked at the URL the certificate carries, says revoked (with the reason certbot gave).
    aia = second.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    [ocsp_url] = [d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.OCSP]
    (tmp_path / "issuing.pem").write_text(acme_world.issuing_pem)
    cert = str(_files(tmp_path)["cert"])
    while True:
        done = subprocess.run(["openssl", "ocsp", "-issuer", str(tmp_path / "issuing.pem"), "-cert", cert, "-url",
                               ocsp_url, "-CAfile", str(tmp_path / "root.pem"), "-verify_other",
                               str(tmp_path / "issuing.pem")], capture_output=True, text=True, timeout=30, check=False)
        if f"{cert}: revoked" in done.stdout:
            break
        assert time.monotonic() < deadline + 5, done.stdout + done.stderr
        time.sleep(0.2)
    assert "Response verify OK" in done.stdout + done.stderr and "Reason: keyCompromise" in done.stdout, done.stdout
