"""One ACME world for the package: a stack (API, worker, beat) whose validator asks a real local DNS
server (bind9) and fetches http-01 answers from a port of 127.0.0.1, a project with a CA chain and two
ACME profiles (one requiring external account binding, one not)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acme.support import AcmeWorld, start_world


@pytest.fixture(scope="package")
def acme_world() -> Iterator[AcmeWorld]:
    yield from start_world()
