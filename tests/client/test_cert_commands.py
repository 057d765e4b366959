"""``kms-pki login``, ``cert request`` and ``cert status`` as a user runs them, against the real stack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api_client import Tenant
from tests.client.conftest import Cli, mode_of
from tests.pki_setup import Pki
from tests.stack import Stack


def openssl_verify(root_pem: str, folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "root.pem").write_text(root_pem)
    return subprocess.run(["openssl", "verify", "-CAfile", str(folder / "root.pem"), "-untrusted",
                           str(folder / "chain.pem"), str(folder / "cert.pem")], capture_output=True, text=True,
                          timeout=30)


def fields(stdout: str) -> dict[str, str]:
    """The ``name: value`` lines ``cert request`` prints."""
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def test_login_keeps_a_private_session_and_never_prints_the_token(cli: Cli, worker: Stack, tenant: Tenant,
                                                                    tmp_path: Path) -> None:
    out = cli("login", "--url", worker.api_url, "--client-id", tenant.client_id,
              "--client-secret", tenant.client_secret)
    assert out.returncode == 0, out.stderr
    session_file = tmp_path / "config" / "session.json"
    session = json.loads(session_file.read_text())
    assert set(session) == {"url", "accessToken", "expiresAt"}
    assert session["url"] == worker.api_url
    assert mode_of(session_file) == 0o600
    assert mode_of(session_file.parent) == 0o700
    assert session["accessToken"] not in out.stdout + out.stderr
    assert tenant.client_secret not in session_file.read_text()


def test_login_with_a_wrong_secret_fails_readably(cli: Cli, worker: Stack, tenant: Tenant, tmp_path: Path) -> None:
    out = cli("login", "--url", worker.api_url, "--client-id", tenant.client_id, "--client-secret", "kms_cs_wrong")
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "(401)" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "config" / "session.json").exists()


def test_commands_without_a_session_ask_to_log_in(cli: Cli, tmp_path: Path) -> None:
    out = cli("cert", "status", "00000000-0000-0000-0000-000000000000")
    assert out.returncode == 1
    assert "not logged in" in out.stderr and "kms-pki login" in out.stderr


async def test_cert_request_with_a_server_key_writes_a_chain_that_verifies_and_a_private_key(
        cli: Cli, logged_in: Tenant, pki: Pki, tmp_path: Path) -> None:
    out_dir = tmp_path / "web"
    out = cli("cert", "request", "--profile", pki.profile_id, "--cn", "web.example.test",
              "--san", "dns:web.example.test", "--san", "ip:127.0.0.1", "--ttl", "7d", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    printed = fields(out.stdout)
    assert printed["status"] == "issued"
    assert {"certificateRequestId", "serialNumber", "certificateId"} <= set(printed)
    assert mode_of(out_dir / "key.pem") == 0o600
    verified = openssl_verify(pki.root_pem, out_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cert = x509.load_pem_x509_certificate((out_dir / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert f"{cert.serial_number:x}".lower() in printed["serialNumber"].lower().replace(":", "")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["web.example.test"]


async def test_cert_request_from_a_csr_writes_no_key_and_verifies(cli: Cli, logged_in: Tenant, pki: Pki,
                                                                  tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    (tmp_path / "app.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out_dir = tmp_path / "app"
    out = cli("cert", "request", "--profile", pki.profile_id, "--csr", str(tmp_path / "app.csr"),
              "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["cert.pem", "chain.pem"]
    verified = openssl_verify(pki.root_pem, out_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cert = x509.load_pem_x509_certificate((out_dir / "cert.pem").read_bytes())
    assert cert.public_key() == key.public_key()


async def test_cert_status_prints_the_request_without_its_private_key(cli: Cli, logged_in: Tenant, pki: Pki,
                                                                       tmp_path: Path) -> None:
    issued = cli("cert", "request", "--profile", pki.profile_id, "--cn", "status.example.test",
                 "--out", str(tmp_path / "s"))
    assert issued.returncode == 0, issued.stderr
    request_id = fields(issued.stdout)["certificateRequestId"]
    out = cli("cert", "status", request_id, "--wait", "5")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["certificateRequestId"] == request_id
    assert shown["status"] == "issued"
    assert shown["certificate"] == (tmp_path / "s" / "cert.pem").read_text()
    assert "privateKey" not in shown
    assert "PRIVATE KEY" not in out.stdout


async def test_cert_request_against_an_unknown_profile_fails_with_a_readable_error(
        cli: Cli, logged_in: Tenant, tmp_path: Path) -> None:
    out = cli("cert", "request", "--profile", "00000000-0000-0000-0000-000000000000", "--cn", "a.example.test",
              "--out", str(tmp_path / "nothing"))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "(404)" in out.stderr
    assert "profile" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "nothing").exists()


async def test_cert_request_against_the_policy_lists_every_violation(cli: Cli, logged_in: Tenant, pki: Pki,
                                                                     tmp_path: Path) -> None:
    out = cli("cert", "request", "--profile", pki.profile_id, "--cn", "evil.example.org",
              "--san", "dns:evil.example.org", "--out", str(tmp_path / "nothing"))
    assert out.returncode == 1
    first, *details = out.stderr.splitlines()
    assert first.startswith("error: ") and "(400)" in first  # a policy violation is a 400 (DESIGN.md 5.1)
    assert any("commonName" in line or "common_name" in line for line in details), out.stderr
    assert any("altNames" in line or "dns_name" in line for line in details), out.stderr
    assert "Traceback" not in out.stderr
