"""Durations (DESIGN.md 5.1): TTLs ``<n><unit>`` with s, m (minutes), h, d, w, y (365 days) and their
compounds (``1h30m``); a policy's ``validity.max`` ``<n>[hdmy]`` where m is months of 30 days."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.policy.ttl import MAX_TTL_SECONDS, UNIT_SECONDS, format_ttl, parse_policy_max, parse_ttl


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("90s", 90),
        ("5m", 300),
        ("12h", 43_200),
        ("90d", 7_776_000),
        ("2w", 1_209_600),
        ("1y", 31_536_000),
        ("100y", 3_153_600_000),
        ("1h30m", 5_400),
        ("1d12h", 129_600),
        ("1y2w3d4h5m6s", 31_536_000 + 1_209_600 + 259_200 + 14_400 + 300 + 6),
        ("1h0m", 3_600),
    ],
    ids=["seconds", "ninety-seconds", "minutes-not-months", "hours", "days", "weeks", "year-is-365-days", "max",
         "compound-hour-minutes", "compound-day-hours", "compound-every-unit", "compound-zero-part"],
)
def test_ttl_is_parsed_to_seconds(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0d", "zero"),
        ("-5d", "negative"),
        ("90", "no unit"),
        ("90x", "unknown unit 'x'"),
        ("90D", "unknown unit 'D'"),
        ("90mo", "unknown unit 'mo'"),
        ("101y", "maximum of 100y"),
        ("999999999999s", "maximum of 100y"),
        ("99y99w", "maximum of 100y"),
        ("1.5d", "<n><unit>"),
        ("30m1h", "largest down"),
        ("1h1h", "largest down"),
        ("1h30", "no unit after 30"),
        ("0h0m", "zero"),
        ("1h 30m", "<n><unit>"),
        (" 90d", "<n><unit>"),
        ("d", "<n><unit>"),
        ("1s" * 7, "<n><unit>"),
        ("9" * 1000 + "d", "<n><unit>"),
    ],
    ids=["empty", "zero", "negative", "no-unit", "unknown-unit", "upper-case-unit", "months-is-not-a-ttl-unit",
         "over-100y", "huge-seconds", "compound-over-100y", "fraction", "compound-out-of-order",
         "compound-repeated-unit", "compound-last-part-without-unit", "compound-zero", "compound-with-space",
         "whitespace", "unit-only", "seven-parts", "thousand-digits"],
)
def test_malformed_ttl_is_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="ttl") as caught:
        parse_ttl(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1s"), (90, "90s"), (60, "1m"), (3600, "1h"), (86_400, "1d"), (90 * 86_400, "90d"),
     (31_536_000, "1y"), (86_401, "86401s")],
)
def test_ttl_is_formatted_with_the_largest_exact_unit(seconds: int, text: str) -> None:
    assert format_ttl(seconds) == text


@pytest.mark.parametrize("seconds", [0, -1, True])
def test_formatting_a_non_positive_ttl_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        format_ttl(seconds)


@given(st.integers(min_value=1, max_value=MAX_TTL_SECONDS))
def test_formatted_ttl_parses_back_to_the_same_seconds(seconds: int) -> None:
    assert parse_ttl(format_ttl(seconds)) == seconds


@given(st.sampled_from(sorted(UNIT_SECONDS)).flatmap(
    lambda unit: st.tuples(st.integers(1, MAX_TTL_SECONDS // UNIT_SECONDS[unit]), st.just(unit))))
def test_any_ttl_within_bounds_round_trips_through_its_canonical_form(amount_unit: tuple[int, str]) -> None:
    amount, unit = amount_unit
    seconds = parse_ttl(f"{amount}{unit}")
    assert seconds == amount * UNIT_SECONDS[unit]
    assert parse_ttl(format_ttl(seconds)) == seconds


@pytest.mark.parametrize(("text", "seconds"), [
    ("6m", 180 * 86_400), ("1m", 30 * 86_400), ("90d", 90 * 86_400), ("12h", 43_200), ("1y", 365 * 86_400),
    ("2w", 14 * 86_400), ("5400s", 5_400),
], ids=["months-of-30-days", "one-month", "days", "hours", "year-is-365-days", "weeks-extension",
        "seconds-extension"])
def test_policy_validity_max_is_parsed_with_m_as_months_of_30_days(text: str, seconds: int) -> None:
    assert parse_policy_max(text) == seconds


def test_m_is_minutes_in_a_ttl_and_months_in_a_policy_maximum() -> None:
    assert parse_ttl("6m") == 360 and parse_policy_max("6m") == 180 * 86_400


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("0m", "zero"), ("-6m", "negative"), ("6", "no unit"), ("6M", "unknown unit 'M'"),
    ("6x", "unknown unit 'x'"), ("1h30m", "<n><unit>"), ("1.5m", "<n><unit>"), ("1300m", "maximum of 100y"),
    ("9" * 100 + "d", "<n><unit>"),
], ids=["empty", "zero", "negative", "no-unit", "upper-case-unit", "unknown-unit", "compound", "fraction",
        "over-100y", "hundred-digits"])
def test_malformed_policy_validity_max_is_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"validity\.max") as caught:
        parse_policy_max(text)
    assert message in str(caught.value)


@given(st.integers(0, 99), st.integers(0, 52), st.integers(0, 6), st.integers(0, 23), st.integers(0, 59),
       st.integers(0, 59))
def test_compound_ttl_is_the_sum_of_its_parts(y: int, w: int, d: int, h: int, m: int, s: int) -> None:
    parts = {"y": y, "w": w, "d": d, "h": h, "m": m, "s": s}
    text = "".join(f"{n}{unit}" for unit, n in parts.items() if n)
    total = sum(n * UNIT_SECONDS[unit] for unit, n in parts.items())
    assume(text)
    assert parse_ttl(text) == total
