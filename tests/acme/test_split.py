"""DESIGN.md 2: the API process never makes an outbound connection to a host a client names; ACME
challenge validation is the worker's, on the network queue. Checked on the source (``ast``), and on
the queue the validation task is routed to."""

from __future__ import annotations

import ast
from pathlib import Path

from shared import tasks

ROOT = Path(__file__).resolve().parents[2]
# Client libraries and calls that open connections to arbitrary hosts.
OUTBOUND_MODULES = {"dns", "requests", "urllib.request", "http.client", "httpx", "acme.client"}
OUTBOUND_NAMES = {"ClientSession", "open_connection", "create_connection", "getaddrinfo", "request"}


def _outbound_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if any(a.name == m or a.name.startswith(m + ".") for m in OUTBOUND_MODULES)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if any(node.module == m or node.module.startswith(m + ".") for m in OUTBOUND_MODULES):
                found.append(node.module)
            if node.module.startswith("aiohttp") and any(a.name in OUTBOUND_NAMES for a in node.names):
                found.append(f"{node.module}.{[a.name for a in node.names]}")
        elif isinstance(node, ast.Attribute) and node.attr in OUTBOUND_NAMES - {"request"}:
            found.append(node.attr)
    return [f"{path.relative_to(ROOT)}: {what}" for what in found]


def test_no_api_module_opens_connections_to_client_named_hosts() -> None:
    files = sorted((ROOT / "api").rglob("*.py"))
    assert any(f.parent.name == "acme" for f in files)
    uses = [use for f in files for use in _outbound_uses(f)]
    assert uses == [], uses


def test_the_validator_does_open_them_and_rides_the_network_queue() -> None:
    """The check above is not vacuous: the worker's validator is found by it."""
    assert _outbound_uses(ROOT / "worker" / "acme_validation.py")
    routes = tasks.celery_config("redis://127.0.0.1:6379/0")["task_routes"]
    assert routes[tasks.ACME_VALIDATE] == {"queue": tasks.QUEUE_EXTERNAL}
