"""Durations (DESIGN.md 5.1), in the two grammars upstream uses; every one of them is parsed here.

- A TTL (``attributes.ttl``, a profile's default ttl, a CA's ``ttl``): ``<n><unit>`` with ``s``,
  ``m`` (minutes), ``h``, ``d``, ``w`` (7 days) and ``y`` (365 days), or a compound of them from the
  largest unit down, each at most once: ``1h30m``, ``1d12h``, ``2w3d``.
- A policy's ``validity.max``: one ``<n><unit>`` with ``h``, ``d``, ``m`` (**months of 30 days**, as
  upstream reads it there) and ``y``; ``s`` and ``w`` are accepted too (extension; neither is ambiguous).

A year is 365 days and a month 30, so a duration never depends on leap days or the date it is counted
from.
"""

from __future__ import annotations

import re
from typing import Final

DAY: Final = 86400
UNIT_SECONDS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY, "y": 365 * DAY}
# validity.max: the same units, but m is a month of 30 days.
POLICY_UNIT_SECONDS: Final[dict[str, int]] = {**UNIT_SECONDS, "m": 30 * DAY}
_ORDER: Final = "ywdhms"  # the order of a compound TTL's parts, largest first

# No certificate we issue should outlive this; a larger value is far more likely a typo (``1000y``)
# than an intent, and refusing it also keeps datetime arithmetic far from its limits.
MAX_TTL_SECONDS: Final = 100 * UNIT_SECONDS["y"]

# Digits are bounded before int() so that a megabyte of digits costs nothing to reject. A compound TTL
# has at most one part per unit, so at most six parts.
_PART: Final = r"[0-9]{1,12}[a-zA-Z]*"
_TTL_RE: Final = re.compile(rf"(?:{_PART}){{1,6}}")
_PART_RE: Final = re.compile(r"(?P<n>[0-9]{1,12})(?P<unit>[a-zA-Z]*)")
_UNITS_TEXT: Final = "s, m (minutes), h, d, w, y"
_POLICY_UNITS_TEXT: Final = "h, d, m (months of 30 days), y (also s, w)"


def _checked_text(text: object, what: str, example: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string such as '{example}', not {type(text).__name__}")
    if text == "":
        raise ValueError(f"{what} is empty; write <n><unit> such as '{example}'")
    if text.startswith("-"):
        raise ValueError(f"{what} {text!r} is negative; it must be a positive duration such as '{example}'")
    return text


def _bounded(text: str, what: str, seconds: int) -> int:
    if seconds == 0:
        raise ValueError(f"{what} {text!r} is zero; it must be a positive duration")
    if seconds > MAX_TTL_SECONDS:
        raise ValueError(f"{what} {text!r} is longer than the maximum of 100y")
    return seconds


def parse_ttl(text: str) -> int:
    """The number of seconds the TTL ``text`` stands for; ValueError naming the problem otherwise.

    Strict on purpose: no whitespace, no sign, no fractions, lower-case units, a compound's parts from
    the largest unit down and each unit once (``1h30m``, never ``30m1h`` or ``1h1h``). A TTL decides how
    long a credential stays valid, so guessing is not acceptable.
    """
    text = _checked_text(text, "ttl", "90d")
    if _TTL_RE.fullmatch(text) is None:
        raise ValueError(f"ttl {text!r} is not of the form <n><unit> such as '90d' or '1h30m' "
                         f"(units: {_UNITS_TEXT})")
    seconds = 0
    last = -1
    for part in _PART_RE.finditer(text):
        unit = part["unit"]
        if unit == "":
            raise ValueError(f"ttl {text!r} has no unit after {part['n']}; add one of {_UNITS_TEXT}"
                             f" (e.g. '{part['n']}d')")
        if unit not in UNIT_SECONDS:
            raise ValueError(f"ttl {text!r} has unknown unit {unit!r}; use one of {_UNITS_TEXT}")
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"ttl {text!r} is not of the form <n><unit>...: a compound such as '1h30m' "
                             "names its units from the largest down, each once")
        last = rank
        seconds += int(part["n"]) * UNIT_SECONDS[unit]
    return _bounded(text, "ttl", seconds)


def parse_policy_max(text: str) -> int:
    """The seconds of a policy's ``validity.max`` (``m`` = months of 30 days); ValueError otherwise."""
    text = _checked_text(text, "validity.max", "90d")
    match = _PART_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"validity.max {text!r} is not of the form <n><unit> such as '90d' or '6m' "
                         f"(units: {_POLICY_UNITS_TEXT})")
    unit = match["unit"]
    if unit == "":
        raise ValueError(f"validity.max {text!r} has no unit; add one of {_POLICY_UNITS_TEXT}"
                         f" (e.g. '{match['n']}d')")
    if unit not in POLICY_UNIT_SECONDS:
        raise ValueError(f"validity.max {text!r} has unknown unit {unit!r}; use one of {_POLICY_UNITS_TEXT}")
    return _bounded(text, "validity.max", int(match["n"]) * POLICY_UNIT_SECONDS[unit])


def format_ttl(seconds: int) -> str:
    """The shortest exact single-unit TTL for ``seconds`` (``86400`` -> ``'1d'``, ``90`` -> ``'90s'``);
    weeks are written as days.

    Exact, never rounded, so ``parse_ttl(format_ttl(n)) == n`` for every positive ``n`` up to 100y.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"ttl seconds must be a positive integer, not {seconds!r}")
    for unit in ("y", "d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
