"""The renewal setting a certificate gets from its profile (DESIGN.md 7, upstream's rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.renewal import stamp

START = datetime(2026, 1, 1, tzinfo=UTC)


def days(n: float) -> datetime:
    return START + timedelta(days=n)


def test_renew_before_shorter_than_the_lifetime_is_kept() -> None:
    s = stamp({"autoRenew": True, "renewBeforeDays": 7}, server_key=True, not_before=START, not_after=days(30))
    assert (s.auto_renew, s.renew_before_days, s.renewal_due_at) == (True, 7, days(23))


def test_renew_before_not_shorter_than_the_lifetime_becomes_lifetime_minus_one() -> None:
    s = stamp({"autoRenew": True, "renewBeforeDays": 30}, server_key=True, not_before=START, not_after=days(10))
    assert (s.renew_before_days, s.renewal_due_at) == (9, days(1))


def test_a_certificate_that_would_be_due_before_a_day_old_does_not_renew() -> None:
    s = stamp({"autoRenew": True, "renewBeforeDays": 30}, server_key=True, not_before=START, not_after=days(1))
    assert (s.auto_renew, s.renew_before_days, s.renewal_due_at) == (False, None, None)


def test_a_csr_certificate_does_not_renew() -> None:
    s = stamp({"autoRenew": True, "renewBeforeDays": 7}, server_key=False, not_before=START, not_after=days(30))
    assert not s.auto_renew


def test_a_profile_without_auto_renew_stamps_nothing() -> None:
    s = stamp({"autoRenew": False, "renewBeforeDays": 7}, server_key=True, not_before=START, not_after=days(30))
    assert (s.auto_renew, s.renew_before_days) == (False, None)
