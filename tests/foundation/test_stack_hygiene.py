"""The test stack cleans up after itself: a dropped stack leaves no Redis database lease and no temporary
folder, a lease is renewed while its stack lives and is released when its process exits, and a lease left
by a killed run is taken over at once instead of blocking the next run.

Every test here leases on a Redis server of its own, so the leases of test runs going on beside it are
never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import tests.stack
from tests.faults.harness import PrivateRedis
from tests.redis_leases import LEASE_KEY, DbLeases
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_base(private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> str:
    """The private server's base URL, empty, and tests.stack pointed at it (leases and broker alike)."""
    base = private_redis.url.rsplit("/", 1)[0]
    redis.Redis.from_url(private_redis.url).flushall()
    monkeypatch.setattr(tests.stack, "REDIS_BASE", base)
    # The numbers tests.stack leases from: under xdist, this test process's share. A subprocess made by
    # run_stack_process leases from that share too (it inherits PYTEST_XDIST_WORKER), so the numbers must
    # be the same for a stack here to take over the one a killed subprocess held.
    monkeypatch.setattr(tests.stack, "LEASES", DbLeases(f"{base}/1", numbers=tests.stack.LEASES.numbers))
    monkeypatch.delenv("KMS_TEST_KEEP_LOGS", raising=False)
    return base


def leases_of(base: str) -> dict[str, str]:
    client = redis.Redis.from_url(f"{base}/1", decode_responses=True)
    return {str(key): str(client.get(key)) for key in client.keys(LEASE_KEY.format("*"))}


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def holder(pid: int, host: str | None = None) -> str:
    return json.dumps({"owner": "kms_test_gone", "host": host or socket.gethostname(), "pid": pid}, sort_keys=True)


def run_stack_process(base: str, then: str) -> tuple[int, Path]:
    """A separate Python process that creates a Stack on ``base``, prints its number and folder, then
    runs ``then``; returns what it printed."""
    code = ("from tests.stack import Stack\ns = Stack(name='elsewhere')\nprint(s.redis_db, s.dir, flush=True)\n"
            + then)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "KMS_TEST_REDIS": base},
                         capture_output=True, text=True, timeout=60)
    number, folder = out.stdout.split()
    return int(number), Path(folder)


def test_a_stack_created_and_dropped_leaves_no_lease_and_no_folder(redis_base: str) -> None:
    stack = Stack(name="hygiene")
    stack.create_database()
    assert stack.dir.is_dir() and list(leases_of(redis_base)) == [LEASE_KEY.format(stack.redis_db)]
    stack.drop()
    assert leases_of(redis_base) == {}
    assert not stack.dir.exists()


def test_the_folder_stays_after_drop_when_kms_test_keep_logs_is_set(redis_base: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMS_TEST_KEEP_LOGS", "1")
    stack = Stack(name="hygiene")
    try:
        stack.drop()
        assert stack.dir.is_dir()
        assert leases_of(redis_base) == {}
    finally:
        shutil.rmtree(stack.dir, ignore_errors=True)


def test_a_lease_outlives_its_ttl_while_its_heartbeat_renews_it(redis_base: str) -> None:
    leases = DbLeases(f"{redis_base}/1", ttl=2, heartbeat=0.5)
    n = leases.lease("kms_test_alive", wait=0)
    time.sleep(3.5)
    assert leases_of(redis_base) == {LEASE_KEY.format(n): leases.value("kms_test_alive")}
    leases.release(n, "kms_test_alive")
    assert leases_of(redis_base) == {}


def test_an_undropped_stacks_lease_is_released_when_its_process_exits(redis_base: str) -> None:
    _, folder = run_stack_process(redis_base, "")
    shutil.rmtree(folder, ignore_errors=True)
    assert leases_of(redis_base) == {}


def test_the_lease_of_a_killed_run_is_taken_over_at_once(redis_base: str) -> None:
    killed_number, folder = run_stack_process(redis_base, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    shutil.rmtree(folder, ignore_errors=True)
    assert list(leases_of(redis_base)) == [LEASE_KEY.format(killed_number)]  # SIGKILL: no atexit ran
    start = time.monotonic()
    stack = Stack(name="hygiene")
    try:
        assert time.monotonic() - start < 2
        assert stack.redis_db == killed_number
        assert leases_of(redis_base) == {LEASE_KEY.format(killed_number): tests.stack.LEASES.value(stack.db_name)}
    finally:
        stack.drop()


def test_fourteen_leases_of_dead_owners_do_not_block_a_new_stack(redis_base: str) -> None:
    client = redis.Redis.from_url(f"{redis_base}/1")
    gone = holder(dead_pid())
    for n in range(2, 16):
        client.set(LEASE_KEY.format(n), gone, ex=4 * 3600)
    start = time.monotonic()
    stack = Stack(name="hygiene")
    try:
        assert time.monotonic() - start < 2
        assert 2 <= stack.redis_db <= 15
    finally:
        stack.drop()
    assert LEASE_KEY.format(stack.redis_db) not in leases_of(redis_base)


@pytest.mark.parametrize("make_value", [
    lambda: holder(os.getpid()),
    lambda: holder(dead_pid(), host="another-host"),  # its pid means nothing here
    lambda: "kms_test_1234abcd",
], ids=["owner-alive", "owner-on-another-host", "lease-of-an-older-stack-py"])
def test_a_lease_whose_owner_may_be_alive_is_never_taken_over(redis_base: str,
                                                             make_value: Callable[[], str]) -> None:
    value = make_value()
    redis.Redis.from_url(f"{redis_base}/1").set(LEASE_KEY.format(2), value, ex=60)
    with pytest.raises(RuntimeError, match="no free Redis database number"):
        DbLeases(f"{redis_base}/1", numbers=(2,)).lease("kms_test_new", wait=0)
    assert leases_of(redis_base) == {LEASE_KEY.format(2): value}


def test_a_database_number_with_clients_connected_is_skipped_though_nobody_leases_it(redis_base: str) -> None:
    # As the worker of a killed run stays connected: another process.
    orphan = subprocess.Popen([sys.executable, "-c", "import redis, sys, time\n"
                               f"r = redis.Redis.from_url('{redis_base}/2'); r.ping(); print('up', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout is not None and orphan.stdout.readline().strip() == "up"
        leases = DbLeases(f"{redis_base}/1", numbers=(2, 3))
        n = leases.lease("kms_test_new", wait=0)
        leases.release(n, "kms_test_new")
    finally:
        orphan.kill()
        orphan.wait()
    assert n == 3


def test_this_processs_own_idle_connections_do_not_make_a_number_busy(redis_base: str) -> None:
    """The test process keeps idle connections to the numbers of stacks it dropped (Celery's producer pool
    is never closed): counted as busy, they used up every number in a long run of the suite."""
    own = redis.Redis.from_url(f"{redis_base}/2")
    own.ping()
    try:
        leases = DbLeases(f"{redis_base}/1", numbers=(2,))
        assert 2 not in leases.busy()
        n = leases.lease("kms_test_again", wait=0)
        leases.release(n, "kms_test_again")
    finally:
        own.close()
    assert n == 2


def test_each_pytest_xdist_process_leases_from_its_own_share_of_the_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.redis_leases import numbers_for_this_process

    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        shares.append(set(numbers_for_this_process(range(2, 16))))
    assert shares[0] | shares[1] == set(range(2, 16)) and not shares[0] & shares[1]
    assert min(len(s) for s in shares) == 7
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert numbers_for_this_process(range(2, 16)) == tuple(range(2, 16))


def test_a_second_process_under_a_running_ones_name_is_refused(redis_base: str) -> None:
    """Two session fixtures once started an API under one name: the first handle was overwritten, and that
    API outlived the stack (and kept its Redis database number busy)."""
    stack = Stack(name="hygiene")
    try:
        stack.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        with pytest.raises(RuntimeError, match="already running"):
            stack.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    finally:
        stack.drop()
