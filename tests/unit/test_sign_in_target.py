"""After signing in, the web UI follows ``next`` only to a path of its own site: never another host, in
any of the spellings browsers turn into one."""

from __future__ import annotations

import pytest

from api.web.account import _next


@pytest.mark.parametrize("target", ["/projects", "/projects/6b2f/certificates?status=revoked", "/a//b"])
def test_a_path_of_this_site_is_followed(target: str) -> None:
    assert _next(target) == target


@pytest.mark.parametrize("target", [None, "", "projects", "//evil.example", "https://evil.example/",
                                    "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "/ /x", "/\x7f"])
def test_anything_else_goes_to_the_projects_page(target: str | None) -> None:
    assert _next(target) == "/projects"
