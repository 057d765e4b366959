"""Server-driven renewal settings (DESIGN.md 7): what a profile's ``apiConfig`` stamps on a certificate.

As upstream does it: a ``renewBeforeDays`` not shorter than the certificate's lifetime in days becomes
``max(1, lifetimeDays - 1)``, and auto-renewal is dropped when that would make the certificate due
before it is a day old, so that a short-lived certificate never renews in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DAY = timedelta(days=1)


@dataclass(frozen=True)
class RenewalStamp:
    auto_renew: bool
    renew_before_days: int | None
    renewal_due_at: datetime | None


NONE = RenewalStamp(False, None, None)


def effective_renew_before(renew_before_days: int, not_before: datetime, not_after: datetime) -> int | None:
    """``renew_before_days`` as it applies to a certificate of this validity; None when it cannot."""
    lifetime_days = (not_after - not_before) // DAY
    days = max(1, lifetime_days - 1) if renew_before_days >= lifetime_days else renew_before_days
    if not_after - timedelta(days=days) - not_before < DAY:
        return None
    return days


def stamp(api_config: dict[str, Any] | None, *, server_key: bool, not_before: datetime, not_after: datetime
          ) -> RenewalStamp:
    """The renewal setting a new certificate gets from its profile's ``apiConfig``. Only a key the server
    made can be renewed by the server (a CSR's key is its owner's)."""
    config = api_config or {}
    days = config.get("renewBeforeDays")
    if not server_key or config.get("autoRenew") is not True or not isinstance(days, int) or days < 1:
        return NONE
    effective = effective_renew_before(days, not_before, not_after)
    if effective is None:
        return NONE
    return RenewalStamp(True, effective, not_after - timedelta(days=effective))
