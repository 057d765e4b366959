"""``kms-pki batch submit`` and ``batch fetch`` as a user runs them, against the real stack: a progress
bar, one folder per item, and a download that survives being killed."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api_client import Tenant
from tests.client.conftest import Cli, mode_of
from tests.pki_setup import Pki

ISSUED_FILES = ["cert.pem", "chain.pem", "item.json", "key.pem"]


def name_of(index: int) -> str:
    return f"item-{index}.example.test"


def write_jsonl(path: Path, count: int, *, bad: frozenset[int] = frozenset()) -> Path:
    """``count`` lines of attributes; the indexes in ``bad`` ask for a name outside the policy."""
    lines = []
    for i in range(count):
        name = f"item-{i}.example.org" if i in bad else name_of(i)
        lines.append(json.dumps({"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def item_folders(out: Path) -> list[Path]:
    return sorted((p for p in out.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def is_complete(folder: Path) -> bool:
    names = sorted(p.name for p in folder.iterdir())
    return names == ISSUED_FILES or names == ["error.txt", "item.json"]


def common_name(folder: Path) -> str:
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_batch_submit_of_1000_lines_draws_a_progress_bar_and_writes_a_folder_per_item(
        cli: Cli, logged_in: Tenant, pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli("batch", "submit", "--profile", pki.profile_id, "--input", str(write_jsonl(tmp_path / "in.jsonl", 1000)),
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "batch.json").read_text())
    assert done.stdout.strip() == f"batchId: {saved['batchId']}"
    assert saved["total"] == 1000
    # Not a terminal: plain progress lines, the last one complete.
    assert "\r" not in done.stderr
    bars = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert bars[0].split()[1] == "0/1000", done.stderr
    assert re.search(r"\b1000/1000\b.*100%.*[\d.]+ items/s.*ETA", bars[-1]), done.stderr
    folders = item_folders(out)
    assert [int(f.name) for f in folders] == list(range(1000))
    assert all(is_complete(f) for f in folders)
    assert all(mode_of(f / "key.pem") == 0o600 for f in folders)
    for index in (0, 499, 999):
        assert common_name(folders[index]) == name_of(index)
        meta = json.loads((folders[index] / "item.json").read_text())
        assert meta["status"] == "issued" and meta["source"] == f"in.jsonl:{index + 1}"
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-")]


async def test_batch_submit_from_a_folder_of_csrs_keeps_their_sorted_order(cli: Cli, logged_in: Tenant, pki: Pki,
                                                                            tmp_path: Path) -> None:
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    names = [f"host-{c}" for c in "dbeac"]  # written out of order: the items follow the sorted file names
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.example.test")]))
               .sign(key, hashes.SHA256()))
        (csrs / f"{name}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (csrs / "notes.txt").write_text("not a CSR: ignored")
    out = tmp_path / "out"
    done = cli("batch", "submit", "--profile", pki.profile_id, "--input", str(csrs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    folders = item_folders(out)
    assert [common_name(f) for f in folders] == [f"{n}.example.test" for n in sorted(names)]
    assert all(sorted(p.name for p in f.iterdir()) == ["cert.pem", "chain.pem", "item.json"] for f in folders)
    assert json.loads((out / "batch.json").read_text())["sources"] == [f"{n}.csr" for n in sorted(names)]


async def test_failed_items_get_an_error_file_and_exit_code_4(cli: Cli, logged_in: Tenant, pki: Pki,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli("batch", "submit", "--profile", pki.profile_id,
               "--input", str(write_jsonl(tmp_path / "in.jsonl", 6, bad=frozenset({1, 4}))), "--out", str(out))
    assert done.returncode == 4, done.stderr
    assert "4 issued, 2 failed" in done.stderr
    for index in (1, 4):
        assert "example.org" in (out / str(index) / "error.txt").read_text()
    assert all(is_complete(f) for f in item_folders(out))


def test_batch_submit_refuses_more_than_10000_items_before_sending_anything(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli("batch", "submit", "--profile", "00000000-0000-0000-0000-000000000000",
               "--input", str(write_jsonl(tmp_path / "big.jsonl", 10_001)), "--out", str(out))
    assert done.returncode == 1
    assert "10,001 items" in done.stderr and "at most 10,000" in done.stderr
    assert not out.exists()


async def test_batch_fetch_resumes_a_killed_submit_without_rewriting_complete_folders(
        cli: Cli, start_cli: Callable[..., Popen[str]], logged_in: Tenant, pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "out"
    submit = start_cli("batch", "submit", "--profile", pki.profile_id,
                       "--input", str(write_jsonl(tmp_path / "in.jsonl", 1000)), "--out", str(out),
                       stderr=tmp_path / "submit.err")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and submit.poll() is None:
        if out.exists() and any(p.name.isdigit() for p in os.scandir(out)):
            break
        time.sleep(0.002)
    os.kill(submit.pid, signal.SIGKILL)
    submit.wait(10)
    assert submit.returncode == -signal.SIGKILL, (tmp_path / "submit.err").read_text()

    before = item_folders(out)
    assert 0 < len(before) < 1000, "the kill should land mid-download"
    # Whatever exists under a final name is complete, even though the writer was killed mid-item.
    assert all(is_complete(f) for f in before)
    stamps = {f.name: (os.stat(f).st_ino, os.stat(f).st_mtime_ns, os.stat(f / "cert.pem").st_mtime_ns)
              for f in before}

    batch_id = json.loads((out / "batch.json").read_text())["batchId"]
    fetched = cli("batch", "fetch", batch_id, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert "1000/1000" in fetched.stderr
    after = item_folders(out)
    assert [int(f.name) for f in after] == list(range(1000))
    assert all(is_complete(f) for f in after)
    assert {f.name: (os.stat(f).st_ino, os.stat(f).st_mtime_ns, os.stat(f / "cert.pem").st_mtime_ns)
            for f in after if f.name in stamps} == stamps
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-")]
    assert common_name(out / "765") == name_of(765)

    again = cli("batch", "fetch", batch_id, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert {f.name: os.stat(f).st_ino for f in item_folders(out)} == {f.name: os.stat(f).st_ino for f in after}
