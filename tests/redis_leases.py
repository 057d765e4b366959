"""Leases of Redis database numbers for test stacks (tests/stack.py), so that stacks running at the same
time (parallel test runs, a benchmark beside the tests) never share a queue.

A lease names its owner process and lapses after ``LEASE_TTL_SECONDS`` unless its heartbeat renews it,
so a killed run does not hold its number for hours; a lease whose owner process is gone (on this host)
is taken over at once. A number some client is still connected to is never taken, leased or not: the
API and workers of a killed run outlive it, and would consume the next stack's queue.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time

import redis

LEASE_KEY = "kms-test:redis-db:{}"
LEASE_TTL_SECONDS = 120
HEARTBEAT_SECONDS = 30
# Compare-and-act on a lease's value: nobody renews, releases or takes over a lease another one holds.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_TAKE_OVER = ("if redis.call('get', KEYS[1]) == ARGV[1] then"
              " return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) end return 0")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def abandoned(raw: bytes | str) -> bool:
    """Whether a lease's owner process is known to be gone. Only a lease of this host can tell; a lease
    written by an older tests/stack.py holds just a database name, and lapses with its TTL."""
    try:
        holder = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not alive(pid)


class DbLeases:
    """Leases of the database numbers ``numbers``, kept as keys in the Redis database ``url`` names."""

    def __init__(self, url: str, *, key: str = LEASE_KEY, numbers: range | tuple[int, ...] = range(2, 16),
                 ttl: int = LEASE_TTL_SECONDS, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.redis = redis.Redis.from_url(url)
        self.key, self.numbers, self.ttl, self.heartbeat = key, numbers, ttl, heartbeat
        self._held: dict[int, tuple[str, threading.Event]] = {}
        atexit.register(self.release_all)  # the leases of stacks the process never dropped

    def value(self, owner: str) -> str:
        return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid()}, sort_keys=True)

    def lease(self, owner: str, wait: float = 300) -> int:
        """A free number (or one whose owner is gone), renewed until released; waits up to ``wait`` s."""
        value = self.value(owner)
        deadline = time.monotonic() + wait
        while True:
            busy = self.busy()
            for n in self.numbers:
                key = self.key.format(n)
                if n not in busy and (self.redis.set(key, value, nx=True, ex=self.ttl)
                                      or self._take_over(key, value)):
                    self._renew_until_released(n, key, value)
                    return n
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no free Redis database number in {list(self.numbers)} for a test stack; clients are still "
                    f"connected to {sorted(busy & set(self.numbers))} (the API or workers of a killed run?)")
            time.sleep(0.5)

    def release(self, n: int, owner: str) -> None:
        held = self._held.pop(n, None)
        if held is not None:
            held[1].set()
        self.redis.eval(_RELEASE, 1, self.key.format(n), self.value(owner))

    def release_all(self) -> None:
        for n, (value, stop) in list(self._held.items()):
            stop.set()
            self._held.pop(n, None)
            try:
                self.redis.eval(_RELEASE, 1, self.key.format(n), value)
            except redis.RedisError:
                pass  # at exit, with the server gone: the lease lapses with its TTL

    def busy(self) -> set[int]:
        """The database numbers some client of the server is connected to, except this process's own: the
        test process itself keeps idle connections to the numbers of stacks it dropped (Celery's producer
        pool, shared by every app of one broker URL in a process, is never closed), which consume nothing."""
        own = _own_tcp_ports()
        return {int(client["db"]) for client in self.redis.client_list()
                if int(str(client.get("addr", ":0")).rsplit(":", 1)[1]) not in own}

    def _take_over(self, key: str, value: str) -> bool:
        current = self.redis.get(key)
        return (current is not None and abandoned(current)
                and bool(self.redis.eval(_TAKE_OVER, 1, key, current, value, self.ttl)))

    def _renew_until_released(self, n: int, key: str, value: str) -> None:
        stop = threading.Event()
        self._held[n] = (value, stop)

        def renew() -> None:
            while not stop.wait(self.heartbeat):
                try:
                    if not self.redis.eval(_RENEW, 1, key, value, self.ttl):
                        print(f"tests.redis_leases: lost the lease {key}", file=sys.stderr)
                        return
                except redis.RedisError:
                    continue  # unreachable for a moment: the next beat tries again, well within the TTL

        threading.Thread(target=renew, name=f"lease-redis-db-{n}", daemon=True).start()


def _own_tcp_ports() -> set[int]:
    """The local ports of this process's TCP sockets (Linux: its socket inodes looked up in /proc/net/tcp*)."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def numbers_for_this_process(numbers: range) -> tuple[int, ...]:
    """Under pytest-xdist each test process leases from its own share of the numbers, so the idle
    connections one keeps (see ``DbLeases.busy``) never look busy to another."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not count.isdigit() or int(count) < 2:
        return tuple(numbers)
    index, total = int(worker[2:]), int(count)
    return tuple(n for i, n in enumerate(numbers) if i % total == index % total)
