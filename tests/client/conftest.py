"""Fixtures of the client tests: the ``kms-pki`` client commands run as a user runs them (a subprocess
of ``python -m api.cli``), against the session's real stack (API, worker, database), with a private
configuration folder per test (``KMS_CONFIG_DIR``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api_client import Tenant
from tests.pki_setup import Pki, make_pki
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def client_env(worker: Stack, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in worker.env.items() if k not in ("KMS_URL", "KMS_CLIENT_ID", "KMS_CLIENT_SECRET")}
    env["KMS_CONFIG_DIR"] = str(tmp_path / "config")
    return env


@pytest.fixture
def cli(client_env: dict[str, str]) -> Cli:
    """``cli("cert", "status", ID)`` -> the finished process (text stdout and stderr)."""
    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env={**client_env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture
def start_cli(client_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """A client command left running (stderr to a file, so nothing blocks on a full pipe)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, stderr: Path) -> subprocess.Popen[str]:
        with open(stderr, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=client_env,
                                    stdout=subprocess.DEVNULL, stderr=err, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
async def pki(tenant: Tenant) -> Pki:
    return await make_pki(tenant.admin, tenant.project_id)


@pytest.fixture
def logged_in(cli: Cli, worker: Stack, tenant: Tenant) -> Tenant:
    """The tenant's admin identity logged in through ``kms-pki login`` (credentials from the environment)."""
    out = cli("login", env={"KMS_URL": worker.api_url, "KMS_CLIENT_ID": tenant.client_id,
                            "KMS_CLIENT_SECRET": tenant.client_secret})
    assert out.returncode == 0, out.stderr
    return tenant


def mode_of(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
