"""``client/`` talks HTTP only (DESIGN.md section 2): it imports the standard library, aiohttp and its own
modules, never server code (``api``, ``worker``, ``shared``) nor anything the server installs for itself.
The agent (``client/agent``) also reads YAML (its config) and X.509 (the files it keeps on disk), with
PyYAML and ``cryptography``, and nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
ALLOWED = {"aiohttp", "client"} | set(sys.stdlib_module_names)
AGENT_ALLOWED = ALLOWED | {"yaml", "cryptography"}


def test_client_imports_only_the_standard_library_aiohttp_and_itself() -> None:
    found = []
    for path in sorted(CLIENT.rglob("*.py")):
        allowed = AGENT_ALLOWED if "agent" in path.relative_to(CLIENT).parts[:-1] else ALLOWED
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] not in allowed]
    assert found == []
