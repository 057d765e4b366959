"""Fixtures of the lifecycle tests: the issuance tests' API without a broker, and its doorbell."""

from tests.issuance.conftest import api_without_broker, ring_doorbell

__all__ = ["api_without_broker", "ring_doorbell"]
