"""The real upstream peers of the external-CA tests, on loopback: Let's Encrypt's ``pebble`` (a real RFC
8555 server) and a ``bind9`` (``named``) authoritative for the test zone, which takes RFC 2136 dynamic
updates signed with a TSIG key (the dns-01 provider's peer) and answers pebble's lookups.

Every name under the zone resolves to 127.0.0.1, where the API listens: pebble's http-01 check reaches
the service's own ``/.well-known/acme-challenge/{token}`` route (pebble's ``httpPort`` is the API's port).
Names under ``dead.<zone>`` resolve to 127.0.0.2, where nothing listens, so their authorizations fail.

Not a test module, and no stand-in: the processes are the Debian packages' binaries, started and stopped
by their process ids. ``ensure_installed`` installs them with apt-get when missing (as scripts/test.sh
does for the OS tools), so a fresh machine runs these tests too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.stack import free_port

ZONE = "ext.test"
TSIG_NAME = "kms-test-key."
PACKAGES = {"pebble": "pebble", "named": "bind9"}


def ensure_installed() -> None:
    """pebble (with pebble-challtestsrv) and bind9 from Debian, installed only if missing (root only)."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None
                      and not Path(f"/usr/sbin/{tool}").exists()})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"the external-CA tests need {missing}: apt-get install -y {' '.join(missing)}")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, **quiet)


def _named() -> str:
    return shutil.which("named") or "/usr/sbin/named"


class Bind9:
    """``named`` in the foreground on a free loopback port, authoritative for ``ZONE``, updatable with TSIG."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "bind9"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        zone_file = self.dir / f"{ZONE}.zone"
        zone_file.write_text(
            f"$TTL 5\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 5\n@ IN NS ns.{ZONE}.\n"
            f"ns IN A 127.0.0.1\n* IN A 127.0.0.1\n*.dead IN A 127.0.0.2\n")
        (self.dir / "named.conf").write_text(f"""
key "{TSIG_NAME}" {{ algorithm hmac-sha256; secret "{self.tsig_secret}"; }};
options {{
    directory "{self.dir}";
    pid-file "{self.dir}/named.pid";
    session-keyfile "{self.dir}/session.key";
    managed-keys-directory "{self.dir}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{ZONE}" {{ type primary; file "{zone_file}"; allow-update {{ key "{TSIG_NAME}"; }}; }};
""")
        log = open(self.dir / "named.log", "ab")  # the child owns it
        self.proc = subprocess.Popen([_named(), "-g", "-c", str(self.dir / "named.conf")], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("named exited:\n" + (self.dir / "named.log").read_text()[-3000:])
            if "running" in (self.dir / "named.log").read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError("named not up:\n" + (self.dir / "named.log").read_text()[-3000:])

    def stop(self) -> None:
        _stop(self.proc)

    def provider_config(self) -> dict[str, Any]:
        """The CA's ``dnsProviderConfig`` for this server (RFC 2136 with TSIG)."""
        return {"provider": "rfc2136", "nameserver": "127.0.0.1", "port": self.port, "zone": ZONE,
                "tsigKeyName": TSIG_NAME, "tsigAlgorithm": "hmac-sha256", "tsigSecret": self.tsig_secret}


class Pebble:
    """``pebble`` on free loopback ports, with its own TLS certificate, resolving names through ``bind9``
    and checking http-01 on ``http_port`` (the API's). Its roots change at every start."""

    def __init__(self, directory: Path, *, dns: Bind9, http_port: int, env: dict[str, str] | None = None) -> None:
        self.dir = directory / f"pebble-{secrets.token_hex(3)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.management_port = free_port()
        self.dns = dns
        self.http_port = http_port
        self.env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0",
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls_ca_pem = self._tls_certificate()

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def log_path(self) -> Path:
        return self.dir / "pebble.log"

    def _tls_certificate(self) -> str:
        """A CA for pebble's own listener (the CA's ``caBundle``) and a certificate for 127.0.0.1 it signs."""
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (self.dir / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (self.dir / "key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        (self.dir / "tls-ca.pem").write_text(ca_pem)
        return ca_pem

    def start(self) -> None:
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.dir / "cert.pem"), "privateKey": str(self.dir / "key.pem"),
            "httpPort": self.http_port, "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}
        (self.dir / "pebble-config.json").write_text(json.dumps(config))
        log = open(self.log_path, "ab")  # the child owns it
        self.proc = subprocess.Popen(
            [shutil.which("pebble") or "pebble", "-config", str(self.dir / "pebble-config.json"),
             "-dnsserver", self.dns.address],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("pebble exited:\n" + self.log_path.read_text()[-3000:])
            try:
                self.get(self.directory_url)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pebble not up:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def restart(self) -> None:
        """Down and up again on the same ports (pebble keeps nothing: its orders and roots are new)."""
        self.stop()
        self.start()

    def get(self, url: str) -> bytes:
        context = ssl.create_default_context(cadata=self.tls_ca_pem)
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:  # noqa: S310 - our own peer
            body: bytes = resp.read()
            return body

    def root_pem(self) -> str:
        """Pebble's root of this run (from its management interface)."""
        return self.get(f"https://127.0.0.1:{self.management_port}/roots/0").decode()

    def requests_logged(self, path_part: str) -> list[str]:
        """The lines of pebble's own log for requests whose path holds ``path_part``."""
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if path_part in line and "-> calling handler()" in line]


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
