"""Durations written as ``<n><unit>`` (DESIGN.md section 5): ``90d``, ``12h``, ``1y``.

Units are ``s``, ``m`` (minutes, never months), ``h``, ``d`` and ``y`` (365 days, so a "year" never
depends on leap days or on the date it is counted from). The same syntax is used for policy maxima,
profile defaults and request TTLs, so every one of them is parsed here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Final

UNIT_SECONDS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}

# No certificate we issue should outlive this; a larger value is far more likely a typo (``1000y``)
# than an intent, and refusing it also keeps datetime arithmetic far from its limits.
MAX_TTL_SECONDS: Final = 100 * UNIT_SECONDS["y"]

# Digits are bounded before int() so that a megabyte of digits costs nothing to reject.
_TTL_RE: Final = re.compile(r"(?P<n>[0-9]{1,12})(?P<unit>[a-zA-Z]*)")


def parse_ttl(text: str) -> int:
    """The number of seconds ``text`` stands for; ValueError naming the problem otherwise.

    Strict on purpose: no whitespace, no sign, no fractions, no compound forms (``1d12h``), exactly one
    lower-case unit. A TTL decides how long a credential stays valid, so guessing is not acceptable.
    """
    if not isinstance(text, str):
        raise ValueError(f"ttl must be a string such as '90d', not {type(text).__name__}")
    if text == "":
        raise ValueError("ttl is empty; write <n><unit> such as '90d' (units: s, m, h, d, y)")
    if text.startswith("-"):
        raise ValueError(f"ttl {text!r} is negative; it must be a positive duration such as '90d'")
    match = _TTL_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"ttl {text!r} is not of the form <n><unit> such as '90d' (units: s, m, h, d, y)")
    unit = match["unit"]
    if unit == "":
        raise ValueError(f"ttl {text!r} has no unit; add one of s, m, h, d, y (e.g. '{match['n']}d')")
    if unit not in UNIT_SECONDS:
        raise ValueError(f"ttl {text!r} has unknown unit {unit!r}; use one of s, m, h, d, y")
    amount = int(match["n"])
    if amount == 0:
        raise ValueError(f"ttl {text!r} is zero; it must be a positive duration")
    seconds = amount * UNIT_SECONDS[unit]
    if seconds > MAX_TTL_SECONDS:
        raise ValueError(f"ttl {text!r} is longer than the maximum of 100y")
    return seconds


def format_ttl(seconds: int) -> str:
    """The shortest exact ``<n><unit>`` for ``seconds`` (``86400`` -> ``'1d'``, ``90`` -> ``'90s'``).

    Exact, never rounded, so ``parse_ttl(format_ttl(n)) == n`` for every positive ``n``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"ttl seconds must be a positive integer, not {seconds!r}")
    for unit in ("y", "d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
