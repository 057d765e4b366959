"""What the ACME tests run against: a real DNS server (bind9's ``named``, on loopback, with a zone that
takes RFC 2136 updates), a stack whose validator asks it and fetches http-01 answers from a port the
tests serve, profiles enrolling over ACME, and ``acme`` library clients. Not a test module."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import josepy as jose
from acme import client, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.api_client import ApiClient, open_tenant
from tests.pki_setup import PROFILES, make_pki
from tests.stack import Stack, free_port

ZONE = "example.test"
ACME = "/api/v1/cert-manager/acme/profiles"


def _install_bind9() -> None:
    """bind9 is a test tool installed the way scripts/test.sh installs OS tools: only if missing."""
    if shutil.which("named") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "-q", "bind9"], **quiet, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "bind9"], **quiet, check=False)


def free_udp_tcp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class DnsServer:
    """``named`` serving ``example.test`` on 127.0.0.1:port: every name under it has the address
    127.0.0.1 (a wildcard A record), and 127.0.0.1 may add and remove records (RFC 2136)."""

    def __init__(self) -> None:
        _install_bind9()
        named = shutil.which("named") or "/usr/sbin/named"
        self.dir = Path(tempfile.mkdtemp(prefix="kms-acme-dns-"))
        self.port = free_udp_tcp_port()
        (self.dir / f"{ZONE}.zone").write_text(
            f"$TTL 1\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 1\n@ IN NS ns.{ZONE}.\n"
            f"ns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n")
        (self.dir / "named.conf").write_text(f"""
options {{
    directory "{self.dir}";
    pid-file "{self.dir}/named.pid";
    session-keyfile "{self.dir}/session.key";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
zone "{ZONE}" {{ type primary; file "{ZONE}.zone"; allow-update {{ 127.0.0.1; }}; }};
""")
        self.log = open(self.dir / "named.log", "ab")
        self.proc = subprocess.Popen([named, "-g", "-c", str(self.dir / "named.conf")], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                query = dns.message.make_query(f"probe.{ZONE}", "A")
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
            except (OSError, dns.exception.Timeout):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"named did not start: {(self.dir / 'named.log').read_text()[-3000:]}")
            time.sleep(0.2)

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _update(self, update: dns.update.UpdateMessage) -> None:
        answer = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)
        assert answer.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(answer.rcode())

    def set_txt(self, name: str, value: str) -> None:
        update = dns.update.UpdateMessage(ZONE)
        update.replace(name + ".", 1, "TXT", f'"{value}"')
        self._update(update)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Http01Responder:
    """Answers http-01 challenges on 127.0.0.1:port from a dict of token -> key authorization, as a
    web server under the identifier's name would."""

    def __init__(self, port: int) -> None:
        self.answers: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []  # (Host header, path)
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder.requests.append((self.headers.get("Host", ""), self.path))
                token = self.path.rsplit("/", 1)[-1]
                body = responder.answers.get(token)
                if not self.path.startswith("/.well-known/acme-challenge/") or body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AcmeWorld:
    stack: Stack
    api_url: str
    dns: DnsServer
    http01_port: int
    project_id: str
    admin_token: str
    root_pem: str
    issuing_pem: str
    root_id: str
    issuing_id: str
    policy_id: str
    profile_id: str  # EAB required
    open_profile_id: str  # acmeConfig.skipEabBinding
    eab_kid: str
    eab_secret: str

    def directory_url(self, profile_id: str | None = None, api_url: str | None = None) -> str:
        return f"{api_url or self.api_url}{ACME}/{profile_id or self.profile_id}/directory"


async def acme_profile(admin: ApiClient, project_id: str, policy_id: str, ca_id: str, slug: str,
                       config: dict[str, Any]) -> str:
    r = await admin.post(PROFILES, {
        "projectId": project_id, "slug": slug, "issuerType": "ca", "caId": ca_id, "certificatePolicyId": policy_id,
        "enrollmentType": "acme", "acmeConfig": config,
        "defaults": {"ttlDays": 30, "extendedKeyUsages": ["server_auth"]}})
    assert r.status == 201, r.body
    profile_id: str = r.body["certificateProfile"]["id"]
    return profile_id


async def build_world(stack: Stack, dns_server: DnsServer, http01_port: int) -> AcmeWorld:
    async with aiohttp.ClientSession() as session:
        tenant = await open_tenant(stack, session, "acme")
        admin = tenant.admin
        pki = await make_pki(admin, tenant.project_id, slug="acme")
        profile_id = await acme_profile(admin, tenant.project_id, pki.policy_id, pki.issuing_id, "acme-eab", {})
        open_id = await acme_profile(admin, tenant.project_id, pki.policy_id, pki.issuing_id, "acme-open",
                                     {"skipEabBinding": True})
        r = await admin.get(f"{PROFILES}/{profile_id}/acme/eab-secret/reveal")
        assert r.status == 200, r.body
        assert admin.token is not None
        return AcmeWorld(stack=stack, api_url=stack.api_url, dns=dns_server, http01_port=http01_port,
                         project_id=tenant.project_id, admin_token=admin.token, root_pem=pki.root_pem,
                         issuing_pem=pki.issuing_pem, root_id=pki.root_id, issuing_id=pki.issuing_id,
                         policy_id=pki.policy_id, profile_id=profile_id, open_profile_id=open_id,
                         eab_kid=r.body["eabKid"], eab_secret=r.body["eabSecret"])


def start_world() -> Iterator[AcmeWorld]:
    dns_server = DnsServer()
    http01_port = free_port()
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    stack = Stack(name="acme", extra_env={
        "KMS_PUBLIC_URL": api_url,
        "KMS_ACME_HTTP01_PORT": str(http01_port),
        "KMS_ACME_DNS_RESOLVER": dns_server.resolver,
        # A failing challenge gives up after 4 s of tries one second apart (the default is 60 s).
        "KMS_ACME_VALIDATION_TIMEOUT_SECONDS": "4",
        "KMS_ACME_VALIDATION_RETRY_SECONDS": "1",
        "KMS_ACME_VALIDATION_ATTEMPT_TIMEOUT_SECONDS": "2",
        # 100 concurrent orders from one address: the per-source bucket would be the only limit measured.
        "KMS_RATE_LIMIT_PER_SOURCE_PER_SECOND": "0",
        "KMS_ACME_CLEANUP_INTERVAL_SECONDS": "1",
    })
    try:
        stack.create_database()
        stack.start_api(port=api_port)
        stack.start_worker(concurrency=4)
        stack.start_beat()
        yield asyncio.run(build_world(stack, dns_server, http01_port))
    finally:
        stack.drop()
        dns_server.stop()


# -- the acme library client --------------------------------------------------------------------


def new_key() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def acme_client(world: AcmeWorld, *, profile_id: str | None = None, key: jose.JWK | None = None,
                eab: bool = True, api_url: str | None = None) -> client.ClientV2:
    """A registered account of the profile (with EAB where the profile needs it), as the acme library
    (certbot's) makes one."""
    profile_id = profile_id or world.open_profile_id
    key = key or new_key()
    alg = jose.ES256 if isinstance(key, jose.JWKEC) else jose.RS256
    net = client.ClientNetwork(key, alg=alg, user_agent="kms-acme-test")
    directory = client.ClientV2.get_directory(world.directory_url(profile_id, api_url), net)
    acme = client.ClientV2(directory, net)
    binding = None
    if eab and profile_id == world.profile_id:
        binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=world.eab_kid,
                                                            hmac_key=world.eab_secret, directory=directory)
    acme.new_account(messages.NewRegistration.from_data(email="ops@example.test", terms_of_service_agreed=True,
                                                        external_account_binding=binding))
    return acme


def csr_for(names: list[str], ips: list[str] | None = None) -> tuple[bytes, bytes]:
    """(private key PEM, CSR PEM) for the names, as certbot makes them (acme.crypto_util.make_csr)."""
    import ipaddress

    from acme import crypto_util

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    csr = crypto_util.make_csr(key_pem, domains=names or None,
                               ipaddrs=[ipaddress.ip_address(i) for i in ips or []] or None)
    return key_pem, csr


@contextlib.contextmanager
def responder(world: AcmeWorld) -> Iterator[Http01Responder]:
    r = Http01Responder(world.http01_port)
    try:
        yield r
    finally:
        r.close()


# -- raw requests, for what a well-behaved client never sends -----------------------------------


class RawAcme:
    """Signs requests by hand (acme.jws, the library's own JWS) and returns the raw HTTP answer, so a
    test can read the status and problem type of what a real client would turn into an exception."""

    def __init__(self, world: AcmeWorld, acme: client.ClientV2) -> None:
        import requests

        self.world = world
        self.acme = acme
        self.key: jose.JWK = acme.net.key
        self.kid: str | None = acme.net.account.uri if acme.net.account is not None else None
        self.directory = acme.directory
        self.http = requests.Session()

    def nonce(self) -> str:
        r = self.http.head(self.directory["newNonce"], timeout=10)
        value: str = r.headers["Replay-Nonce"]
        return value

    def post(self, url: str, payload: Any = None, *, nonce: str | None = None, header_url: str | None = None,
             jwk: bool = False, key: jose.JWK | None = None) -> Any:
        """POST a JWS to ``url``: ``payload`` a dict (JSON), ``None`` (POST-as-GET) or raw bytes."""
        import json

        from acme import jws as acme_jws

        body = b"" if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signing_key = key or self.key
        alg = jose.ES256 if isinstance(signing_key, jose.JWKEC) else jose.RS256
        signed = acme_jws.JWS.sign(body, key=signing_key, alg=alg,
                                   nonce=jose.decode_b64jose(nonce or self.nonce()), url=header_url or url,
                                   kid=None if jwk else self.kid)
        return self.http.post(url, data=signed.json_dumps(), headers={"Content-Type": "application/jose+json"},
                              timeout=30)


def problem_type(response: Any) -> str:
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    kind: str = response.json()["type"]
    return kind.removeprefix("urn:ietf:params:acme:error:")
