"""TTL strings: ``<n><unit>`` with s, m (minutes), h, d, y (365 days), nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.policy.ttl import MAX_TTL_SECONDS, UNIT_SECONDS, format_ttl, parse_ttl


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("90s", 90),
        ("5m", 300),
        ("12h", 43_200),
        ("90d", 7_776_000),
        ("1y", 31_536_000),
        ("100y", 3_153_600_000),
    ],
    ids=["seconds", "ninety-seconds", "minutes-not-months", "hours", "days", "year-is-365-days", "max"],
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
        ("90w", "unknown unit 'w'"),
        ("90D", "unknown unit 'D'"),
        ("101y", "maximum of 100y"),
        ("999999999999s", "maximum of 100y"),
        ("1.5d", "<n><unit>"),
        ("1d12h", "<n><unit>"),
        (" 90d", "<n><unit>"),
        ("d", "<n><unit>"),
        ("9" * 1000 + "d", "<n><unit>"),
    ],
    ids=["empty", "zero", "negative", "no-unit", "unknown-unit", "upper-case-unit", "over-100y",
         "huge-seconds", "fraction", "compound", "whitespace", "unit-only", "thousand-digits"],
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
