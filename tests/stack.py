"""Start the real service for tests and benchmarks: its own database, a private Redis database
number, the API on a free port, Celery worker and beat subprocesses. Logs go to files so tests can
read them (for example to prove no secret was logged)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from shared.db.migrate import drop_database, migrate
from tests.redis_leases import DbLeases, numbers_for_this_process

PG_BASE = os.environ.get("KMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("KMS_TEST_REDIS", "redis://127.0.0.1:6379")


# Redis database numbers 2-15 are leased to stacks (0 is the dev default, 1 holds the leases), so stacks
# running at the same time (parallel test runs, a benchmark beside the tests) never share a queue.
LEASES = DbLeases(f"{REDIS_BASE}/1", numbers=numbers_for_this_process(range(2, 16)))


def _lease_redis_db(owner: str) -> int:
    return LEASES.lease(owner)


def _release_redis_db(n: int, owner: str) -> None:
    LEASES.release(n, owner)


# Ports for the servers tests start come from below the kernel's ephemeral range (32768-60999 here), each
# test process from its own share. A port the kernel hands out for ``bind(0)`` is free only for a moment:
# another xdist process can be handed the same one, or an outgoing connection can take it, before the
# server we start binds it; one CI run lost that race and two stacks shared one private Redis server.
_PORTS = numbers_for_this_process(range(20000, 32000))
_next_port = secrets.randbelow(len(_PORTS))


def free_port() -> int:
    """A port of this process's share that nothing is bound to now, going round the share so a port just
    given out (and maybe not bound yet) is not given again soon."""
    global _next_port
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port % len(_PORTS)]
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a server of this run, or of something else on the machine)
            return port
    raise RuntimeError("no free port left in this test process's share")


class Stack:
    def __init__(self, *, name: str = "test", extra_env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"kms-{name}-"))
        self.db_name = f"kms_{name}_{secrets.token_hex(4)}"
        self.database_url = f"{PG_BASE}/{self.db_name}"
        self.redis_db = _lease_redis_db(self.db_name)
        self.broker_url = f"{REDIS_BASE}/{self.redis_db}"
        root_key_file = self.dir / "root.key"
        root_key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        root_key_file.chmod(0o600)
        self.root_key_file = root_key_file
        # The CA root key goes to workers and beat only (worker_env), never to the API (DESIGN.md 4.4).
        self.ca_root_key_file = self.dir / "ca-root.key"
        self.ca_root_key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        self.ca_root_key_file.chmod(0o600)
        self.env = {
            **os.environ,
            "KMS_DATABASE_URL": self.database_url,
            "KMS_BROKER_URL": self.broker_url,
            "KMS_ROOT_KEY_FILE": str(root_key_file),
            "KMS_LOG_LEVEL": "INFO",
            "KMS_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        for variable in ("KMS_ROOT_KEY", "KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE"):
            self.env.pop(variable, None)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._envs: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, str] = {}
        self.api_url = ""

    @property
    def worker_env(self) -> dict[str, str]:
        """``env`` plus the CA root key: for worker and beat processes only."""
        return {**self.env, "KMS_CA_ROOT_KEY_FILE": str(self.ca_root_key_file)}

    # -- lifecycle -------------------------------------------------------------------------------

    def create_database(self) -> None:
        asyncio.run(migrate(self.database_url))
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()

    def drop(self) -> None:
        self.stop_all()
        asyncio.run(drop_database(self.database_url))
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()
        _release_redis_db(self.redis_db, self.db_name)
        if not os.environ.get("KMS_TEST_KEEP_LOGS"):  # else the logs stay for a look after the run
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        running = self.processes.get(name)
        if running is not None and running.poll() is None:
            # Its handle would be lost and the process left running after the stack is dropped (holding its
            # Redis database number busy for every later stack).
            raise RuntimeError(f"a process named {name!r} is already running in this stack; stop it first")
        log = open(self.log_path(name), "ab")  # owned by the child for its lifetime
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes[name] = proc
        self._envs[name] = {**self.env, **(env or {})}
        return proc

    def start_api(self, *, port: int | None = None, env: dict[str, str] | None = None,
                  name: str = "api") -> str:
        port = port or free_port()
        self.spawn(name, [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                   env)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/healthz", self.processes[name], self.log_path(name))
        if name == "api":
            self.api_url = url
        return url

    def start_worker(self, *, name: str = "worker", concurrency: int = 2, extra: list[str] | None = None,
                     env: dict[str, str] | None = None, plain_celery: bool = False) -> subprocess.Popen[bytes]:
        """A worker started the ways users start one: `kms-pki worker`, or with ``plain_celery`` a bare
        `celery -A worker.app worker`; neither names queues, so both must consume every queue."""
        node = f"{name}-{secrets.token_hex(3)}@{socket.gethostname()}"
        self.nodes[name] = node
        command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker"] if plain_celery else \
            [sys.executable, "-m", "api.cli", "worker"]
        proc = self.spawn(name, [
            *command, "--loglevel", "INFO", "--concurrency", str(concurrency), "-n", node,
            "--without-gossip", "--without-mingle", *(extra or []),
        ], {"KMS_CA_ROOT_KEY_FILE": str(self.ca_root_key_file), **(env or {})})
        self.wait_worker_ready(name)
        return proc

    def wait_worker_ready(self, name: str = "worker", timeout: float = 60) -> None:
        """Until the worker answers a broker ping (its log level may hide its "ready" line)."""
        from celery import Celery

        from shared.tasks import celery_config

        node = self.nodes[name]
        probe = Celery("probe", set_as_current=False)
        probe.conf.update(celery_config(self.processes_env(name).get("KMS_BROKER_URL", self.broker_url)))
        deadline = time.monotonic() + timeout
        log = self.log_path(name)
        try:
            while time.monotonic() < deadline:
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{log.read_text()[-4000:]}")
                if probe.control.ping(destination=[node], timeout=0.5):
                    return
            raise RuntimeError(f"{name} not ready in {timeout}s:\n{log.read_text()[-4000:]}")
        finally:
            probe.close()

    def processes_env(self, name: str) -> dict[str, str]:
        return self._envs.get(name, self.env)

    def start_beat(self, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`kms-pki beat`, as users run it."""
        return self.spawn("beat", [
            sys.executable, "-m", "api.cli", "beat", "--loglevel", "INFO",
            "--schedule", str(self.dir / "beat-schedule"),
        ], {"KMS_CA_ROOT_KEY_FILE": str(self.ca_root_key_file), **(env or {})})

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the whole group: a Celery worker's pool processes too
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self, name: str) -> None:
        self.kill(name, signal.SIGTERM)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310  (our own http URL)
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up in {timeout}s:\n{log.read_text()[-4000:]}")
