"""The real checkers an issued certificate faces (DESIGN.md section 6): ``openssl verify``, DigiCert's
``lint_pkix_cert``, and a TLS handshake against ``openssl s_server``. Not a test module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography import x509

from tests.stack import free_port

# pkilint is installed next to the interpreter running the tests (the project's virtual environment).
LINT_PKIX_CERT = str(Path(sys.executable).with_name("lint_pkix_cert"))
TIMEOUT = 30


async def run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    """(exit code, stdout and stderr) of a command."""
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def openssl_verify(directory: Path, root_pem: str, chain_pem: str, cert_pem: str, *,
                         purpose: str | None = None) -> tuple[int, str]:
    """``openssl verify -x509_strict [-purpose P] -CAfile root.pem [-untrusted chain.pem] cert.pem``, the
    files written into ``directory``: (exit code, output). The tests' one ``openssl verify``; with
    ``purpose="sslserver"`` the certificate must also be fit for a TLS server."""
    directory.mkdir(parents=True, exist_ok=True)
    root, chain, cert = (directory / f for f in ("root.pem", "chain.pem", "cert.pem"))
    root.write_text(root_pem)
    cert.write_text(cert_pem)
    argv = ["openssl", "verify", "-x509_strict", *(["-purpose", purpose] if purpose else []), "-CAfile", str(root)]
    if chain_pem.strip():
        chain.write_text(chain_pem)
        argv += ["-untrusted", str(chain)]
    return await run(*argv, str(cert))


async def pkilint_errors(pem: str) -> list[str]:
    """Every finding of severity ERROR or FATAL from the RFC 5280 linter (warnings are allowed).

    All findings are requested as JSON and filtered here, so a change in how the tool orders or
    thresholds its output cannot hide one; output that is not the expected JSON fails loudly.
    """
    _, out = await run(LINT_PKIX_CERT, "lint", "--format", "JSON", "--severity", "ALL",
                       "--document-format", "PEM", "-", stdin=pem.encode())
    try:
        results = json.loads(out)["results"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"lint_pkix_cert did not lint the certificate: {out[:2000]}") from exc
    assert results, "lint_pkix_cert ran no validator"
    return [f"{r['validator']} @ {r['node_path']}: {f['code']} ({f['severity']})"
            for r in results for f in r["finding_descriptions"] if f["severity"] in ("ERROR", "FATAL")]


@contextlib.asynccontextmanager
async def tls_server(cert: Path, key: Path, chain: Path) -> AsyncIterator[int]:
    """``openssl s_server`` on a free port of 127.0.0.1 with the issued chain; yields the port, killed after."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
        "-cert_chain", str(chain), "-www", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        seen = b""
        while b"ACCEPT" not in seen:  # s_server prints (and flushes) ACCEPT once it listens
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            if not line:
                raise AssertionError(f"openssl s_server exited: {seen.decode(errors='replace')}")
            seen += line
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def python_tls_handshake(port: int, server_name: str, root: Path) -> tuple[int, str]:
    """A Python ``ssl`` client that trusts only ``root`` and checks the host name: (peer serial, TLS version)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.load_verify_locations(cafile=str(root))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock, \
            context.wrap_socket(sock, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        version = tls.version()
    assert der is not None and version is not None
    return x509.load_der_x509_certificate(der).serial_number, version
