"""`kms-pki dev` on a machine with no keys configured: it generates the root key and the CA root key into
``.kms-dev/``, and gives the CA root key to its worker and beat children only, never to the API it serves
itself (DESIGN.md 4.4 and 11)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
CA_KEY_VARIABLES = {"KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE"}


@dataclass
class Dev:
    folder: Path  # where `kms-pki dev` ran
    process: subprocess.Popen[bytes]


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    stack = Stack(name="dev")  # only for its own database and Redis database number; it starts nothing
    folder = tmp_path_factory.mktemp("dev")
    env = {k: v for k, v in stack.env.items() if k != "KMS_ROOT_KEY_FILE"}
    env["PYTHONPATH"] = str(ROOT)  # it runs in another folder: this checkout's code, not an installed copy
    log = open(folder / "dev.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "dev", "--port", str(free_port())], cwd=folder,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "is running on" not in (folder / "dev.log").read_text(errors="replace"):
            assert proc.poll() is None, (folder / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (folder / "dev.log").read_text()[-3000:]
            time.sleep(0.2)
        yield Dev(folder, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        stack.drop()


def test_dev_generates_a_root_key_and_a_separate_ca_root_key(dev: Dev) -> None:
    root, ca_root = dev.folder / ".kms-dev" / "root.key", dev.folder / ".kms-dev" / "ca-root.key"
    for path in (root, ca_root):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert root.read_text() != ca_root.read_text()


def _is_celery(pid: int) -> bool:
    return b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def test_dev_gives_the_ca_root_key_to_its_worker_and_beat_only(dev: Dev) -> None:
    ca_root = str((dev.folder / ".kms-dev" / "ca-root.key").resolve())
    children = _children(dev.process.pid)
    celery = [c for c in children if _is_celery(c)]
    kinds = sorted(next(a for a in Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") if a in (b"worker", b"beat"))
                   .decode() for c in celery)
    assert kinds == ["beat", "worker"]
    for child in celery:
        assert _environ(child).get("KMS_CA_ROOT_KEY_FILE") == ca_root
    # The API runs in the dev process itself (create_app refuses to start given a CA root key); whatever it
    # spawns (policy evaluators) inherits its environment, which must not hold the key either.
    for child in set(children) - set(celery):
        assert not CA_KEY_VARIABLES & set(_environ(child)), child


def test_the_printed_curl_lines_issue_a_certificate(dev: Dev) -> None:
    """What a new user does: copy the two printed lines into a shell."""
    text = (dev.folder / "dev.log").read_text(errors="replace")
    block = text[text.index("Issue a certificate"):].split("\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    script = "\n".join(lines)
    assert script.startswith("TOKEN=$(curl") and "certificates?wait=10" in script, script
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=dev.folder)
    answer = json.loads(out.stdout)
    assert answer["status"] == "issued", answer
    cert = x509.load_pem_x509_certificate(answer["certificate"]["certificate"].encode())
    assert [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)] == ["web.demo.internal"]
    assert answer["certificate"]["privateKey"].startswith("-----BEGIN PRIVATE KEY-----")
