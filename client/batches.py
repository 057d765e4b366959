"""The machinery of the ``batch submit`` and ``batch fetch`` commands (``client.cli``): reading a batch's
input, the item folders it is downloaded into, and the download itself, which resumes from what is on disk.

- Item folders: ``DIR/<index>/`` holds ``cert.pem``, ``chain.pem``, ``key.pem`` (0600, server keys only)
  and ``item.json`` (index, request id, status, certificate id, serial, source; no key), or ``error.txt``
  and ``item.json`` for a failed item. Each is written in ``DIR/.partial-<index>`` and renamed into
  place, so a folder that exists under its final name is complete; ``batch fetch`` removes leftover
  partial folders and never rewrites a complete one. A lock on ``DIR/.lock`` keeps two downloads out of
  the same folder.
- How the download stays cheap for 10,000 items: the batch counters are polled with ``?wait=1`` (which
  also returns at once on completion) and ``Retry-After``; only when they show items finished that are
  not on disk yet are items fetched, and only for the index ranges missing on disk: the open-ended last
  range as NDJSON streams filtered ``status=issued`` / ``status=failed`` (no pending rows, nothing
  already on disk), ranges in between as cursor pages bounded to the range. An interrupted download
  resumes after the last index on disk rather than from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

from client.progress import Progress
from client.sdk import MAX_BATCH_ITEMS, MAX_ITEMS_PAGE, KmsClient, item_cursor

PARTIAL = ".partial-"
# Inner gaps closer than this are fetched as one range: a few items fetched twice cost less than a request.
MERGE_GAP = 64


class BatchError(Exception):
    """A batch problem the user can act on (its input, a busy output folder, items the server did not
    return), said in one message (exit 1)."""


# -- input ------------------------------------------------------------------------------------------


def read_batch_input(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The batch items of a .jsonl file of attributes or a folder of .csr files, and where each came from."""
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix == ".csr" and p.is_file()), key=lambda p: p.name)
        if not files:
            raise BatchError(f"{path} holds no .csr files")
        _check_size(len(files), path)
        return [{"csr": f.read_text()} for f in files], [f.name for f in files]
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BatchError(f"cannot read the input: {exc}") from None
    items, sources = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            attributes = json.loads(line)
        except ValueError as exc:
            raise BatchError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(attributes, dict):
            raise BatchError(f"{path}:{number}: expected a JSON object of attributes, e.g. "
                           '{"commonName": "a.example.com", "altNames": [{"type": "dns_name", "value": ...}]}')
        items.append({"attributes": attributes})
        sources.append(f"{path.name}:{number}")
    if not items:
        raise BatchError(f"{path} holds no items")
    _check_size(len(items), path)
    return items, sources


def _check_size(count: int, path: Path) -> None:
    if count > MAX_BATCH_ITEMS:
        raise BatchError(f"{path} holds {count:,} items; a batch holds at most {MAX_BATCH_ITEMS:,}: "
                       "split the input and submit several batches")


# -- the output folder ------------------------------------------------------------------------------


class ItemFolders:
    """``DIR/<index>/`` for each downloaded item, each written whole or not at all: it is filled under
    ``DIR/.partial-<index>`` and renamed into place, so a folder under its final name is complete (an
    interrupted write leaves only a partial folder, which the next download removes)."""

    def __init__(self, root: Path, sources: list[str] | None = None) -> None:
        self.root = root
        self.sources = sources or []
        self.issued: set[int] = set()
        self.failed: set[int] = set()

    @property
    def done(self) -> int:
        return len(self.issued) + len(self.failed)

    def __contains__(self, index: int) -> bool:
        return index in self.issued or index in self.failed

    def scan(self) -> None:
        """Learns what earlier runs completed; removes what they left half-written."""
        for entry in os.scandir(self.root):
            if entry.name.startswith(PARTIAL):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.name.isdigit() and entry.is_dir():
                failed = os.path.exists(os.path.join(entry.path, "error.txt"))
                (self.failed if failed else self.issued).add(int(entry.name))

    def write(self, item: dict[str, Any]) -> None:
        # Plain os calls on str paths: 10,000 items are 50,000 files, and pathlib's overhead showed.
        index = int(item["index"])
        # A fixed partial name is safe: the folder is locked, and scan() cleared what a killed run left.
        tmp = os.path.join(self.root, f"{PARTIAL}{index}")
        os.mkdir(tmp, 0o700)  # keys go in
        try:
            meta = {k: item.get(k) for k in ("index", "certificateRequestId", "status", "certificateId",
                                             "serialNumber", "errorMessage")}
            if index < len(self.sources):
                meta["source"] = self.sources[index]
            if item["status"] == "issued":
                _write_new(f"{tmp}/cert.pem", item["certificate"])
                _write_new(f"{tmp}/chain.pem", item.get("certificateChain") or "")
                if item.get("privateKey"):
                    _write_new(f"{tmp}/key.pem", item["privateKey"], mode=0o600)
            else:
                _write_new(f"{tmp}/error.txt", (item.get("errorMessage") or "failed, no reason given") + "\n")
            _write_new(f"{tmp}/item.json", json.dumps(meta) + "\n")
            os.rename(tmp, os.path.join(self.root, str(index)))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (self.issued if item["status"] == "issued" else self.failed).add(index)

    def gaps(self, total: int) -> Iterator[tuple[int, int]]:
        """Inclusive index ranges not on disk yet, in order; ranges closer than MERGE_GAP are joined."""
        return runs((i for i in range(total) if i not in self), join=MERGE_GAP)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One download at a time per folder (the lock dies with its process, SIGKILL included)."""
        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BatchError(f"another kms-pki is downloading into {self.root}") from None
            yield


def _write_new(path: str, text: str, *, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if mode != 0o644:
            os.fchmod(fd, mode)  # exactly this mode, whatever the umask
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


# -- download ---------------------------------------------------------------------------------------


class BatchDownload:
    """Downloads a batch's items into ``ItemFolders`` as they complete (see the module docstring)."""

    def __init__(self, kms: KmsClient, batch_id: str, total: int, folders: ItemFolders, progress: Progress) -> None:
        self.kms = kms
        self.batch_id = batch_id
        self.total = total
        self.folders = folders
        self.progress = progress

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._show()
        first = True
        while self.folders.done < self.total:
            asked = loop.time()
            # ?wait=1 doubles as the pause between polls, and answers at once when the batch completes.
            view, retry_after = await self.kms.batch(self.batch_id, wait=0 if first else 1)
            first = False
            completed = view["status"] == "completed"
            if completed or view["issued"] > len(self.folders.issued) or view["failed"] > len(self.folders.failed):
                await self._sweep(view)
            if self.folders.done >= self.total:
                break
            if completed:
                raise BatchError(f"the server reports batch {self.batch_id} completed, yet items "
                               f"{_ranges(self.folders.gaps(self.total))} were not returned; run `kms-pki batch "
                               "fetch` again")
            await asyncio.sleep(max(0.0, (retry_after or 1.0) - (loop.time() - asked)))

    async def _sweep(self, view: dict[str, Any]) -> None:
        """Fetches the finished items of every index range missing on disk."""
        for start, end in list(self.folders.gaps(self.total)):
            if end == self.total - 1:
                # The open-ended last range: filtered streams return finished items only, none on disk.
                if view["issued"] > len(self.folders.issued):
                    await self._take_all(self.kms.stream_batch_items(self.batch_id, status="issued", after=start - 1))
                if view["failed"] > len(self.folders.failed):
                    await self._take_all(self.kms.stream_batch_items(self.batch_id, status="failed", after=start - 1))
            else:
                # A closed range: unfiltered pages hold exactly its indexes (pending items are small).
                after = start - 1
                while after < end:
                    page = await self.kms.batch_items(self.batch_id, cursor=item_cursor(after),
                                                      limit=min(MAX_ITEMS_PAGE, end - after))
                    if not page["items"]:
                        break
                    for item in page["items"]:
                        self._take(item)
                    after = int(page["items"][-1]["index"])

    async def _take_all(self, items: AsyncIterator[dict[str, Any]]) -> None:
        async for item in items:
            self._take(item)

    def _take(self, item: dict[str, Any]) -> None:
        index = int(item["index"])
        ready = item["status"] == "failed" or (item["status"] == "issued" and item.get("certificate"))
        if ready and index not in self.folders and 0 <= index < self.total:
            self.folders.write(item)
            self._show()

    def _show(self) -> None:
        failed = len(self.folders.failed)
        self.progress.update(self.folders.done, note=f"{failed} failed" if failed else "")


def runs(indexes: Iterable[int], *, join: int = 1) -> Iterator[tuple[int, int]]:
    """Ascending indexes as inclusive ranges; indexes at most ``join`` apart share a range."""
    first = last = -1
    for index in indexes:
        if last < 0:
            first = index
        elif index - last > join:
            yield first, last
            first = index
        last = index
    if last >= 0:
        yield first, last


def _ranges(gaps: Iterator[tuple[int, int]]) -> str:
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in gaps]
    return ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "")


async def download(kms: KmsClient, batch_id: str, total: int, out: Path, sources: list[str]) -> int:
    """Downloads batch ``batch_id`` into the item folders of ``out``, resuming from what is on disk, with a
    progress bar and a summary on stderr; returns the number of failed items."""
    folders = ItemFolders(out, sources)
    with folders.locked():
        folders.scan()
        progress = Progress(total, sys.stderr)
        try:
            await BatchDownload(kms, batch_id, total, folders, progress).run()
        except BaseException as exc:  # Ctrl-C included: say how to go on
            progress.interrupt()
            if not isinstance(exc, BatchError):
                print(f"resume with: kms-pki batch fetch {batch_id} --out {out}", file=sys.stderr)
            raise
        progress.finish()
    issued, failed = len(folders.issued), len(folders.failed)
    print(f"batch {batch_id}: {total} items in {out}: {issued} issued, {failed} failed", file=sys.stderr)
    if failed:
        print(f"failed items: {_ranges(runs(sorted(folders.failed)))} (see {out}/<index>/error.txt)",
              file=sys.stderr)
    return failed

