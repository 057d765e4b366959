"""The security split of DESIGN.md section 2, checked on the source: the web front end (``api/``) cannot
reach the certificate authority (``worker/``), ``shared/`` depends on neither, and CA private keys are
read and decrypted only by worker code.

How the CA-key checks are meant: a CA's sealed key leaves the database through the queries in
``CA_KEY_DOORS`` (``shared.db.authorities.signing_material`` for signing, ``lock_keys_sealed_by`` for the
re-seal of migration 0007), and is opened with the key ring bound to the CA table
(``keyring.open(..., table=CA_TABLE)``). So the tests find, with ``ast``, every reference to those queries
and every ``.open(...)`` call given ``table=CA_TABLE`` or ``table="certificate_authorities"``, and require
all of them to sit under ``worker/`` (and at least one to exist, so the check cannot pass vacuously).
(Opening would fail in the API anyway: CA keys are sealed under the CA root key, which it never has.)
The API may still open *leaf* keys it is allowed to hand out; it just never names the CA table. A name
alias or ``getattr`` trick could evade a static check; the runtime test that imports the API and finds
no ``worker`` module loaded backs it up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CA_TABLE_NAME = "certificate_authorities"


def _python_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, including imports inside functions,
    relative imports (resolved against the file's package) and ``importlib.import_module("...")``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module:
                yield node.lineno, module
            for alias in node.names:  # `from x import y` may import the submodule x.y
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) in ("import_module", "__import__"))):
            yield node.lineno, node.args[0].value


def _imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _python_files(package):
        for line, module in _imported_modules(path):
            if module.split(".")[0] in forbidden:
                found.append(f"{_relative(path)}:{line} imports {module}")
    return found


def test_api_never_imports_worker() -> None:
    assert _imports_of("api", ("worker",)) == []


def test_shared_imports_neither_api_nor_worker() -> None:
    assert _imports_of("shared", ("api", "worker")) == []


def test_api_never_reads_the_ca_root_key() -> None:
    """Only workers load the CA root key (DESIGN.md 4.4); the API merely refuses to start when given one."""
    found = [f"{_relative(p)}:{line}" for p in _python_files("api") for line in _references(p, "ca_root_key_from")]
    allowed = {"api/cli.py"}  # `kms-pki worker`/`beat` check it before exec'ing Celery; `admin rotate-root-key --ca`
    assert [f for f in found if f.split(":")[0] not in allowed] == [], found


def test_api_process_loads_no_worker_module() -> None:
    code = ("import sys, api.app, api.cli, api.authorities, api.profiles; "
            "print(sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _everywhere() -> list[Path]:
    return [p for package in ("api", "shared", "worker") for p in _python_files(package)]


def _references(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if ((isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)
                or (isinstance(node, ast.alias) and name in (node.name, node.name.rpartition(".")[2]))):
            lines.append(getattr(node, "lineno", 0))
    return lines


def _is_ca_table(node: ast.expr) -> bool:
    return ((isinstance(node, ast.Name) and node.id == "CA_TABLE")
            or (isinstance(node, ast.Attribute) and node.attr == "CA_TABLE")
            or (isinstance(node, ast.Constant) and node.value == CA_TABLE_NAME))


# The queries that select a CA's sealed key (the re-seal of migration 0007 reads them in bulk).
CA_KEY_DOORS = ("signing_material", "lock_keys_sealed_by")


def test_only_worker_code_reads_a_cas_encrypted_key_from_the_database() -> None:
    for door in CA_KEY_DOORS:
        callers = [f"{_relative(p)}:{line}" for p in _everywhere() for line in _references(p, door)
                   if _relative(p) != "shared/db/authorities.py"]  # where it is defined
        assert callers, f"{door} is no longer used: update this test to the new door to CA keys"
        assert [c for c in callers if not c.startswith("worker/")] == [], callers


def test_ca_private_keys_are_decrypted_only_in_worker() -> None:
    openings = []
    for path in _everywhere():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
                    and any(k.arg == "table" and _is_ca_table(k.value) for k in node.keywords)):
                openings.append(f"{_relative(path)}:{node.lineno}")
    assert openings, "no key-ring opening of a CA key found: update this test to the new decryption path"
    assert [o for o in openings if not o.startswith("worker/")] == [], openings


def test_api_never_names_the_ca_table_or_its_key_column() -> None:
    """The API reaches CA rows only through ``shared.db.authorities`` functions that never select the key."""
    named = []
    for path in _python_files("api"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    CA_TABLE_NAME in node.value or "encrypted_private_key" in node.value):
                named.append(f"{_relative(path)}:{node.lineno}")
        named += [f"{_relative(path)}:{line} uses CA_TABLE" for line in _references(path, "CA_TABLE")]
    assert named == []
