"""What the fault tests share: a stack with short timings and a Redis server of its own, a project with a
PKI, bulk submission, a look into the broker's queue, a stand-in process supervisor, and the database
facts every test asserts (final statuses, certificates per request).

Not a test module. Every helper talks to the real processes, broker or database: nothing is mocked.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis

from shared.tasks import ISSUE_BATCH_CHUNK as ISSUE_CHUNK_TASK
from shared.tasks import ISSUE_CERTIFICATE as ISSUE_TASK
from shared.tasks import QUEUE_SIGNING
from tests.api_client import ApiClient, open_tenant
from tests.pki_setup import ISSUE, REQUESTS, Pki, make_pki
from tests.stack import Stack, free_port

# Short timings so a lost message or a dead worker is noticed in seconds, not minutes.
FAST_TIMINGS = {
    "KMS_LEASE_SECONDS": "5",
    "KMS_RECONCILE_AFTER_SECONDS": "2",
    "KMS_RECONCILE_INTERVAL_SECONDS": "1",
    "KMS_LOG_LEVEL": "INFO",
}
FINAL = ("issued", "failed")
_brokers: dict[str, PrivateRedis] = {}


@contextmanager
def fault_stack(**extra_env: str) -> Iterator[Stack]:
    """A stack of its own: its own database, and its own Redis server (not merely a database number of
    the shared one, which a concurrent run may pick too), so whatever a test kills or flushes here touches
    no other test. Only the database is created; the test starts the processes it needs."""
    stack = Stack(name="faults", extra_env={**FAST_TIMINGS, **extra_env})
    broker = _brokers[stack.db_name] = PrivateRedis(stack.dir)
    try:
        stack.broker_url = stack.env["KMS_BROKER_URL"] = broker.url
        stack.create_database()
        try:
            yield stack
        finally:
            for name in list(stack.processes):
                stack.kill(name)  # SIGKILL: nothing here is worth a graceful shutdown
            stack.drop()
    finally:
        broker.stop()
        del _brokers[stack.db_name]


def broker_of(stack: Stack) -> PrivateRedis:
    """The private Redis server of a stack made by ``fault_stack``."""
    return _brokers[stack.db_name]


class PrivateRedis:
    """A throw-away ``redis-server`` on a free port, persisting nothing, stopped by its process id.

    ``free_port`` only names a port that was free a moment ago: another xdist process may be handed the same
    one and bind it first. So a server counts as started only when the server answering on the port reports
    this process's pid (a PING alone would be answered by the other run's server, which then stops under
    us); if ours lost the race it has exited, and another port is tried."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        for _attempt in range(5):
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            proc = self._start()
            if proc is not None:
                self._proc = proc
                return
        raise RuntimeError("no private redis-server could bind a free port in 5 tries")

    def _start(self) -> subprocess.Popen[bytes] | None:
        """Our server once it answers as itself; ``None`` when it exited (the port was taken)."""
        proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "no", "--dir", str(self._directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)
        deadline = time.monotonic() + 10
        try:
            while True:
                if proc.poll() is not None:
                    return None
                try:
                    if int(client.info("server")["process_id"]) == proc.pid:
                        return proc
                except (redis.RedisError, OSError, KeyError, ValueError):
                    pass  # not listening yet, or someone else's server (or not a Redis at all) on the port
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    raise RuntimeError(f"redis-server on port {self.port} did not answer as itself in 10 s")
                time.sleep(0.05)
        finally:
            client.close()

    def restart(self) -> None:
        """SIGKILL and start again on the same port: every connection dropped, every message gone."""
        self._proc.kill()
        self._proc.wait(10)
        proc = self._start()
        if proc is None:
            raise RuntimeError(f"port {self.port} was taken while its redis-server restarted")
        self._proc = proc

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


@dataclass
class Project:
    admin: ApiClient
    pki: Pki


async def project_with_pki(stack: Stack, session: aiohttp.ClientSession) -> Project:
    """Starts the API, bootstraps a project (in-process, as the conftest does) and makes root -> issuing CA
    -> policy -> profile over HTTP. The CAs are made by a worker, which is then killed (it is idle: its
    tasks are done), so the test decides when the next worker starts and what it finds."""
    starting_api = asyncio.create_task(asyncio.to_thread(stack.start_api))
    await asyncio.to_thread(stack.start_worker)
    await starting_api
    tenant = await open_tenant(stack, session, "faults")
    project = Project(tenant.admin, await make_pki(tenant.admin, tenant.project_id))
    stack.kill("worker")
    return project


def issue_body(profile_id: str, index: int) -> dict[str, Any]:
    name = f"host-{index}.example.test"
    return {"profileId": profile_id,
            "attributes": {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}}


async def submit(client: ApiClient, profile_id: str, count: int) -> list[str]:
    """POSTs ``count`` requests concurrently, without ``?wait``: each must answer 202 pending."""
    replies = await asyncio.gather(*(client.post(ISSUE, issue_body(profile_id, i)) for i in range(count)))
    assert [r.status for r in replies] == [202] * count, [r.body for r in replies if r.status != 202][:3]
    assert {r.body["status"] for r in replies} == {"pending"}
    return [r.body["certificateRequestId"] for r in replies]


async def statuses(database_url: str) -> Counter[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM certificate_requests GROUP BY status")
    finally:
        await conn.close()
    return Counter({r["status"]: r["n"] for r in rows})


async def wait_for(database_url: str, done: Callable[[Counter[str]], bool], timeout: float, what: str
                   ) -> Counter[str]:
    """Polls the request statuses until ``done(counts)`` holds; fails with the last counts after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await statuses(database_url)
        if done(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s; request statuses {dict(counts)}")
        await asyncio.sleep(0.2)


async def wait_all_final(database_url: str, total: int, timeout: float) -> Counter[str]:
    return await wait_for(database_url, lambda c: sum(c[s] for s in FINAL) == total, timeout,
                          f"all {total} requests issued or failed")


@dataclass(frozen=True)
class Ledger:
    """What the database says about every request and certificate: the truth the invariants are about."""

    status_of: dict[str, str]
    certificates: int
    certificates_per_request: dict[str, int]
    requests_without_matching_certificate: int
    failed_without_message: int

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.status_of.values())


async def ledger(database_url: str) -> Ledger:
    conn = await asyncpg.connect(database_url)
    try:
        requests = await conn.fetch("SELECT id, status FROM certificate_requests")
        certificates = await conn.fetchval("SELECT count(*) FROM certificates")
        per_request = await conn.fetch("SELECT request_id, count(*) AS n FROM certificates GROUP BY request_id")
        # An issued request points at its certificate, and that certificate names the request back.
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM certificate_requests r LEFT JOIN certificates c ON c.id = r.certificate_id"
            " WHERE r.status = 'issued' AND (c.id IS NULL OR c.request_id <> r.id)")
        silent = await conn.fetchval(
            "SELECT count(*) FROM certificate_requests WHERE status = 'failed' AND coalesce(error_message, '') = ''")
    finally:
        await conn.close()
    return Ledger({str(r["id"]): r["status"] for r in requests}, certificates,
                  {str(r["request_id"]): r["n"] for r in per_request}, mismatched, silent)


def assert_exactly_one_certificate_per_issued_request(book: Ledger, request_ids: list[str]) -> None:
    issued = {rid for rid, status in book.status_of.items() if status == "issued"}
    assert set(book.certificates_per_request) == issued, "a certificate exists for a request not issued"
    assert all(n == 1 for n in book.certificates_per_request.values()), \
        {rid: n for rid, n in book.certificates_per_request.items() if n != 1}
    assert book.certificates == len(issued)
    assert book.requests_without_matching_certificate == 0
    assert set(book.status_of) == set(request_ids)


async def request_view(client: ApiClient, request_id: str) -> dict[str, Any]:
    r = await client.get(f"{REQUESTS}/{request_id}")
    assert r.status == 200, r.body
    view: dict[str, Any] = r.body
    return view


def task_outcomes(stack: Stack, worker_log: str = "worker") -> dict[str, list[str]]:
    """Per certificate request id, what each ``kms.issue_certificate`` run returned (from the worker's
    structured log: Celery's own "succeeded" line carries the task's args and return value)."""
    outcomes: dict[str, list[str]] = {}
    path = stack.log_path(worker_log)
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        data = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict) or data.get("name") != ISSUE_TASK or "return_value" not in data:
            continue
        (request_id,) = ast.literal_eval(data["args"])
        outcomes.setdefault(request_id, []).append(ast.literal_eval(data["return_value"]))
    return outcomes


def _queued(stack: Stack, queue: str) -> tuple[list[str], int]:
    """The certificate request ids named by the messages waiting in the stack's Redis (kombu keeps a queue
    as a list of JSON envelopes around a base64 task body ``[args, kwargs, embed]``), one entry per mention,
    and how many of the messages are doorbell chunks (``ready``: their worker claims every ready request)."""
    client = redis.Redis.from_url(stack.broker_url)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    ids: list[str] = []
    doorbells = 0
    for item in raw:  # type: ignore[union-attr]
        envelope = json.loads(item)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        task = envelope["headers"]["task"]
        if task == ISSUE_TASK:
            ids.append(args[0])
        elif task == ISSUE_CHUNK_TASK:
            ids.extend(args[0])
            doorbells += len(args) > 2 and bool(args[2])
    return ids, doorbells


def queued_request_ids(stack: Stack, queue: str = QUEUE_SIGNING) -> list[str]:
    """The request ids the queued messages name: the API coalesces requests arriving together into one
    chunk message, and sends none while a doorbell chunk is already queued (see ``wait_until_queued``)."""
    return _queued(stack, queue)[0]


async def wait_until_queued(stack: Stack, request_ids: list[str], timeout: float = 10) -> None:
    """The API answers 202 before its doorbell is on the broker; wait until every request will be claimed
    by a queued message: named by one, or pending behind a queued doorbell chunk (which claims every ready
    request, so the API sent no message of its own for those)."""
    deadline = time.monotonic() + timeout
    while True:
        ids, doorbells = _queued(stack, QUEUE_SIGNING)
        missing = set(request_ids) - set(ids)
        if not missing or doorbells:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} of {len(request_ids)} requests never reached the broker")
        await asyncio.sleep(0.05)


def flush_broker(stack: Stack) -> None:
    """FLUSHDB of the stack's own Redis: every message, binding and unacknowledged delivery gone."""
    client = redis.Redis.from_url(stack.broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


async def wait_until_issued_between(database_url: str, low: int, high: int, timeout: float) -> Counter[str]:
    """Polls (one connection, every 20 ms) until at least ``low`` and fewer than ``high`` requests are
    issued: the moment to strike while the rest are still in flight."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = await conn.fetch("SELECT status, count(*) AS n FROM certificate_requests GROUP BY status")
            counts = Counter({r["status"]: r["n"] for r in rows})
            if counts["issued"] >= high:
                raise AssertionError(f"the run finished before the fault could strike: {dict(counts)}")
            if counts["issued"] >= low:
                return counts
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError(f"fewer than {low} requests issued in {timeout}s")


async def start_worker_and_beat(stack: Stack, name: str = "worker-2") -> None:
    """A fresh worker (its own log, so its readiness is its own) and beat, whose reconciler brings back
    what the fault lost. Beat is spawned first, so the two start-ups overlap."""
    stack.start_beat()
    await asyncio.to_thread(stack.start_worker, name=name)


def start_api_without_broker(stack: Stack, name: str = "api-no-broker") -> str:
    """A second API on the same database whose broker is a port nothing listens on: every request it
    accepts is a row with no doorbell."""
    return stack.start_api(name=name, env={"KMS_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})


async def wait_for_log(stack: Stack, name: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.log_path(name).read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the {name} log after {timeout}s")
        await asyncio.sleep(0.1)


async def supervise(stack: Stack, names: list[str], every: float = 0.5) -> list[str]:
    """What a process supervisor does (compose's ``restart: unless-stopped`` plus its health check, made
    quick): start again, under the same name, any of ``names`` that exited, or any worker that logged an
    "Unrecoverable error" (Celery's worker then takes about 30 s to exit). Runs until cancelled; returns
    the names it restarted, in order."""
    restarted: list[str] = []
    seen = {name: _log_size(stack, name) for name in names}
    try:
        while True:
            for name in names:
                proc = stack.processes.get(name)
                if proc is None:
                    continue
                log = stack.log_path(name)
                fresh = log.read_bytes()[seen[name]:] if log.exists() else b""
                if proc.poll() is None and b"Unrecoverable error" not in fresh:
                    continue
                restarted.append(name)
                stack.kill(name)
                seen[name] = _log_size(stack, name)
                if name == "beat":
                    stack.start_beat()
                    continue
                try:
                    await asyncio.to_thread(stack.start_worker, name=name)
                except (RuntimeError, redis.ConnectionError):
                    pass  # the readiness probe failed; the process itself is watched on the next round
            await asyncio.sleep(every)
    except asyncio.CancelledError:
        return restarted


def _log_size(stack: Stack, name: str) -> int:
    log = stack.log_path(name)
    return log.stat().st_size if log.exists() else 0
