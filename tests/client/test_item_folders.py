"""The bookkeeping of a batch download folder: what counts as done, and which index ranges to fetch
(no server needed)."""

from __future__ import annotations

from pathlib import Path

from client.batches import ItemFolders, runs


def test_missing_index_ranges_join_when_close_and_end_open(tmp_path: Path) -> None:
    folders = ItemFolders(tmp_path)
    folders.issued = {*range(0, 100), *range(110, 120), *range(200, 300)}
    folders.failed = {105}
    assert list(folders.gaps(400)) == [(100, 199), (300, 399)]
    folders.issued |= set(range(300, 400))
    assert list(folders.gaps(400)) == [(100, 199)]


def test_a_partial_folder_left_by_a_killed_writer_is_removed_and_not_counted(tmp_path: Path) -> None:
    (tmp_path / ".partial-7-abc").mkdir()
    (tmp_path / ".partial-7-abc" / "cert.pem").write_text("half")
    (tmp_path / "3").mkdir()
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "error.txt").write_text("denied")
    folders = ItemFolders(tmp_path)
    folders.scan()
    assert (folders.issued, folders.failed) == ({3}, {4})
    assert not (tmp_path / ".partial-7-abc").exists()


def test_failed_indexes_are_reported_as_runs() -> None:
    assert list(runs([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 7), (9, 10)]
    assert list(runs([])) == []
