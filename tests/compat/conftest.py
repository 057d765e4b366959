"""Fixtures of the compatibility tests: one project and its PKI per session (tests/compat/project.py
says how they are made). The clients under test only read these."""

from __future__ import annotations

import asyncio

import pytest

from tests.compat.project import CompatPki, Project, bootstrap_project, make_pki
from tests.stack import Stack


@pytest.fixture(scope="session")
def compat_project(stack: Stack) -> Project:
    return bootstrap_project(stack)


@pytest.fixture(scope="session")
def compat_pki(worker: Stack, compat_project: Project) -> CompatPki:
    pki: CompatPki = asyncio.run(make_pki(worker.api_url, compat_project))
    return pki

