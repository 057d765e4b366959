"""Durations as the KMS agent's config writes them: Go's ``time.ParseDuration`` (``90s``, ``1h30m``,
``500ms``) plus whole days (``14d``), which upstream's ``parseDurationWithDays`` adds. Days also combine
here (``1d12h``), and ``w`` (7 days) and ``y`` (365 days) are read as the service's request TTLs read them;
upstream refuses both. A bare number is refused, as Go refuses it (``0`` aside)."""

from __future__ import annotations

import re

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
         "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises DurationError naming the text when it is not a duration."""
    value = text.strip()
    if value == "0":
        return 0.0
    if not value:
        raise DurationError("an empty duration")
    total, at = 0.0, 0
    for match in _PART.finditer(value):
        if match.start() != at:
            break
        total += float(match.group(1)) * UNITS[match.group(2)]
        at = match.end()
    if at != len(value):
        raise DurationError(f"{text!r} is not a duration (e.g. 90s, 15m, 1h30m, 14d)")
    return total
