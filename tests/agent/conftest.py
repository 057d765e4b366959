"""Fixtures of the agent tests: ``kms-pki agent`` run as a user runs it (a subprocess, its JSON logs on
stderr to a file), against the session's real stack, for a project of its own per test (so that its
certificate requests can be counted in the database), set up over HTTP as an operator would: a root
and an issuing CA, a policy for ``*.example.test``, the profile ``web`` and the application
``agent-app`` grouping it (the v2 config names those two)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import access
from shared.db.pool import create_pool
from tests.api_client import ApiClient, login
from tests.pki_setup import make_pki
from tests.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
APPLICATIONS = "/api/v1/cert-manager/applications"
CERTIFICATES = "/api/v1/cert-manager/certificates"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
POLICIES = "/api/v1/cert-manager/certificate-policies"

# Whatever the agent may inherit from the person running the tests.
FOREIGN = ("KMS_URL", "KMS_CLIENT_ID", "KMS_CLIENT_SECRET", "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID",
           "INFISICAL_UNIVERSAL_CLIENT_SECRET", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
           "INFISICAL_AGENT_CONFIG_BASE64")


@dataclass
class AgentPki:
    project_id: str
    project_slug: str
    client_id: str
    client_secret: str
    admin: ApiClient
    api_url: str
    profile_id: str
    profile_slug: str
    policy_id: str
    issuing_id: str
    application_name: str
    root_pem: str
    issuing_pem: str


@pytest.fixture
async def agent_pki(worker: Stack, http: ApiClient) -> AgentPki:
    pool = await create_pool(worker.database_url, min_size=1, max_size=1)
    try:
        project, new = await access.bootstrap_project(pool, f"Agent {secrets.token_hex(4)}")
    finally:
        await pool.close()
    admin = http.with_token(await login(http, new.identity.client_id, new.client_secret))
    pki = await make_pki(admin, str(project.id))
    r = await admin.post(APPLICATIONS, {"projectId": str(project.id), "name": "agent-app",
                                        "profileIds": [pki.profile_id]})
    assert r.status in (200, 201), r.body
    return AgentPki(str(project.id), project.slug, new.identity.client_id, new.client_secret, admin, worker.api_url,
                    pki.profile_id, "web", pki.policy_id, pki.issuing_id, "agent-app", pki.root_pem, pki.issuing_pem)


# -- configs -----------------------------------------------------------------------------------------


def hook_command(log: Path) -> str:
    """A post-hook that appends one line per run to ``log``: its event and the serial it saw."""
    return f'echo "$KMS_AGENT_EVENT $KMS_AGENT_SERIAL_NUMBER $KMS_AGENT_REASON" >> {log}'


def write_config(pki: AgentPki, folder: Path, *, version: str = "v1", name: str = "web.example.test",
                 alt_names: list[str] | None = None, csr_path: Path | None = None, certificate_id: str | None = None,
                 ttl: str | None = "30d", key_algorithm: str | None = None, renew_before: str | None = None,
                 status_check: str = "1s", failure_retry: str | None = None, max_failure_retries: int | None = None,
                 omit_root: bool | None = None, modes: dict[str, str] | None = None,
                 address: str | None = None, retry: dict[str, Any] | None = None,
                 hooks: dict[str, dict[str, Any]] | None = None, remove_secret: bool = False) -> Path:
    """A KMS agent config in upstream's format, with credentials in files beside it and every hook
    appending to ``folder/hooks.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client-id").write_text(pki.client_id + "\n")
    (folder / "client-secret").write_text(pki.client_secret + "\n")
    (folder / "client-secret").chmod(0o600)
    modes = modes or {}
    certificate: dict[str, Any] = {}
    if certificate_id:
        certificate["certificate-id"] = certificate_id
    elif version == "v1":
        certificate.update({"project-slug": pki.project_slug, "profile-name": pki.profile_slug})
    else:
        certificate.update({"application-name": pki.application_name, "profile-name": pki.profile_slug})
    if csr_path is not None:
        certificate["csr-path"] = str(csr_path)
    if not certificate_id:
        attributes: dict[str, Any] = {"common-name": name, "alt-names": alt_names or [name],
                                      "extended-key-usages": ["server_auth"]}
        if ttl:
            attributes["ttl"] = ttl
        if key_algorithm:
            attributes["key-algorithm"] = key_algorithm
        if csr_path is None:
            attributes["key-usages"] = ["digital_signature", "key_encipherment"]
        certificate["attributes"] = attributes
    lifecycle: dict[str, Any] = {"status-check-interval": status_check}
    if renew_before:
        lifecycle["renew-before-expiry"] = renew_before
    if failure_retry:
        lifecycle["failure-retry-interval"] = failure_retry
    if max_failure_retries is not None:
        lifecycle["max-failure-retries"] = max_failure_retries
    certificate["lifecycle"] = lifecycle
    hook_log = folder / "hooks.log"
    certificate["post-hooks"] = hooks or {event: {"command": hook_command(hook_log), "timeout": 10}
                                          for event in ("on-issuance", "on-renewal", "on-failure")}
    output: dict[str, Any] = {
        "certificate": {"path": str(folder / "out" / "cert.pem"), "permission": modes.get("certificate", "0644")},
        "chain": {"path": str(folder / "out" / "chain.pem"), "permission": modes.get("chain", "0644")},
    }
    if csr_path is None:
        output["private-key"] = {"path": str(folder / "private" / "key.pem"),
                                 "permission": modes.get("private-key", "0600")}
    if omit_root is not None:
        output["chain"]["omit-root"] = omit_root
    certificate["file-output"] = output
    infisical: dict[str, Any] = {"address": address or pki.api_url,
                                 "retry-strategy": retry or {"base-delay": "200ms", "max-delay": "2s"}}
    config = {"version": version, "infisical": infisical,
              "auth": {"type": "universal-auth", "config": {"client-id": str(folder / "client-id"),
                                                            "client-secret": str(folder / "client-secret"),
                                                            "remove_client_secret_on_read": remove_secret}},
              "certificates": [certificate]}
    path = folder / "certificate-agent-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def make_csr(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "request.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path, key


# -- the agent as a process --------------------------------------------------------------------------


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(extra or {})
    return env


def run_once(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "agent", "--config", str(config), "--once", *args],
                          cwd=ROOT, env=agent_env(env), capture_output=True, text=True, timeout=timeout)


def log_lines(text: str) -> list[dict[str, Any]]:
    """The agent's stderr as JSON objects (every line must be one)."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            lines.append(json.loads(line))
    return lines


class Agent:
    """``kms-pki agent --config FILE`` left running."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.config, self.log_path = config, log
        with open(log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "agent", "--config", str(config), *args],
                                         cwd=ROOT, env=agent_env(env), stdout=subprocess.DEVNULL, stderr=err,
                                         text=True, start_new_session=True)

    def logs(self) -> list[dict[str, Any]]:
        return log_lines(self.log_path.read_text()) if self.log_path.exists() else []

    def messages(self) -> list[str]:
        return [line["message"] for line in self.logs()]

    def count(self, message: str) -> int:
        return sum(m == message for m in self.messages())

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    async def until(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"the agent exited ({self.proc.returncode}):\n{self.tail()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}:\n{self.tail()}"
            await asyncio.sleep(0.1)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:]) if self.log_path.exists() else ""


@dataclass
class OwnApi:
    """An API process of a test's own (same database and broker as the session's), to stop and start
    again on the same port, or to run with settings of its own."""

    stack: Stack
    name: str
    port: int
    url: str
    env: dict[str, str]

    def stop(self) -> None:
        self.stack.stop(self.name)

    def start(self) -> None:
        self.stack.start_api(name=self.name, port=self.port, env=self.env)


def own_api_of(stack: Stack, env: dict[str, str] | None = None) -> OwnApi:
    name, port = f"api-agent-{secrets.token_hex(3)}", free_port()
    return OwnApi(stack, name, port, stack.start_api(name=name, port=port, env=env), dict(env or {}))


@pytest.fixture
def own_api(worker: Stack) -> Iterator[OwnApi]:
    api = own_api_of(worker)
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def start(config: Path, *, env: dict[str, str] | None = None, log: Path | None = None) -> Agent:
        agent = Agent(config, log or tmp_path / f"agent-{len(agents)}.log", env, args=("--verbose",))
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


# -- what the tests look at --------------------------------------------------------------------------


async def requests_of(db: asyncpg.Connection, pki: AgentPki) -> int:
    """Certificate requests the project has made: every issuance and renewal is one."""
    n: int = await db.fetchval("SELECT count(*) FROM certificate_requests WHERE project_id = $1::uuid",
                               pki.project_id)
    return n


def hook_runs(folder: Path) -> list[list[str]]:
    """Each hook run (``event serial reason...``), in order."""
    path = folder / "hooks.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def serial_of(path: Path) -> int:
    return leaf(path).serial_number


def pair_matches(key_path: Path, cert_path: Path) -> bool:
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(serialization.Encoding.DER, spki)
                == leaf(cert_path).public_key().public_bytes(serialization.Encoding.DER, spki))


def mode_of(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)
