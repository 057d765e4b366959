"""The progress bar of long client operations (no server needed)."""

from __future__ import annotations

import io

from client.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_shows_counts_rate_and_eta_on_plain_lines_every_interval() -> None:
    clock, log = Clock(), io.StringIO()
    bar = Progress(1000, log, interval=3.0, clock=clock)
    bar.update(0)
    for second in range(1, 5):
        clock.now = float(second)
        bar.update(100 * second)
    bar.finish()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3  # the first state, one 3 s later, the last
    assert lines[0].split()[1:] == ["0/1000", "0%", "--", "items/s", "ETA", "--"]
    assert "300/1000" in lines[1] and "100.0 items/s" in lines[1] and "ETA 7s" in lines[1]
    assert "400/1000" in lines[2] and "ETA 0s" in lines[2] and "took 4s" in lines[2]
    assert "\r" not in log.getvalue()


def test_progress_on_a_terminal_redraws_one_line() -> None:
    clock, tty = Clock(), Terminal()
    bar = Progress(10, tty, clock=clock)
    for done in range(11):
        clock.now = done * 0.5
        bar.update(done)
    bar.finish()
    out = tty.getvalue()
    assert out.startswith("\r") and out.endswith("\n") and out.count("\n") == 1
    assert out.count("\r") == 12
    assert "10/10" in out.rsplit("\r", 1)[1]


def test_a_resumed_run_counts_only_its_own_items_in_the_rate() -> None:
    clock, log = Clock(), io.StringIO()
    bar = Progress(1000, log, clock=clock)
    bar.update(900)
    clock.now = 2.0
    bar.update(1000)
    bar.finish()
    assert "50.0 items/s" in log.getvalue().splitlines()[-1]


def test_durations_read_like_a_clock() -> None:
    assert [format_duration(s) for s in (0, 59.4, 61, 3725)] == ["0s", "59s", "1m01s", "1h02m"]
