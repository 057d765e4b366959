"""Fixtures of the invariant observers: one project signed into through every path, shared by the
audit and serial observers (they only read it)."""

from __future__ import annotations

import pytest

from tests.invariants.observing import Population, populate, run_sync
from tests.stack import Stack


@pytest.fixture(scope="package")
def population(worker: Stack) -> Population:
    found: Population = run_sync(populate(worker))
    return found
