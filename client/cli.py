"""The client commands of ``kms-pki``: ``login``, ``cert request``, ``cert status``, ``batch submit``,
``batch fetch`` and ``agent`` (``client.agent``). They talk to the HTTP API only, through ``client.sdk``
(``api/cli.py`` hands these command names over before it parses anything of its own).

Choices made where the issue was silent:

- ``kms-pki login --url URL --client-id ID --client-secret SECRET`` (each also from ``KMS_URL``,
  ``KMS_CLIENT_ID``, ``KMS_CLIENT_SECRET``; nothing is prompted for) stores ``{url, accessToken,
  expiresAt}`` in ``$KMS_CONFIG_DIR/session.json`` (else ``$XDG_CONFIG_HOME/kms-pki``, else
  ``~/.config/kms-pki``), mode 0600 in a 0700 folder. The secret is not stored, and the token is never
  printed. The other commands use the session; ``--url`` overrides its address (``KMS_URL`` is read by
  ``login`` only, so a stale variable cannot send a token to another server). An expired session is
  refused with a hint to log in again, before any request.
- ``cert request --profile ID (--csr FILE | --cn NAME [--san dns:N|ip:A|email:E|uri:U ...] [--ttl 30d]
  [--key-algorithm ALG]) --out DIR [--wait 30]`` writes ``DIR/cert.pem``, ``DIR/chain.pem`` and, only when
  the server generated the key, ``DIR/key.pem`` (mode 0600); each file is replaced atomically. It prints
  ``certificateRequestId``, ``status``, ``serialNumber`` and ``certificateId``, one ``name: value`` a
  line. No name is added implicitly: ``--cn`` alone asks for a subject without SANs, as the policy
  decides what is allowed. With ``--csr``, ``--ttl`` (and ``--san``/``--key-algorithm``, which must then
  agree with the CSR) travel as ``attributes`` beside it. ``--wait`` bounds the whole wait (long-poll
  ``?wait=`` then ``Retry-After``).
- ``cert status ID [--wait N]`` prints the request as JSON, without ``privateKey``.
- ``batch submit --profile ID --input PATH --out DIR``: ``PATH`` is a JSON-lines file (one object of
  attributes a line; blank lines skipped) or a folder whose ``*.csr`` files, sorted by name, are the
  items. More than 10,000 items are refused before anything is sent. ``DIR/batch.json`` (``batchId,
  total, url, profileId, input, sources``, where ``sources[i]`` names the file or ``file:line`` of item
  ``i``) is written as soon as the batch is accepted, then the items are downloaded as they complete.
- ``batch fetch ID --out DIR`` resumes ``batch submit`` (after Ctrl-C, SIGKILL or a lost connection) or
  downloads a batch anew. The item folders, and how the download resumes and stays cheap for 10,000
  items, are described in ``client.batches``.
- The progress bar (``client.progress``) is on stderr: done/total, percent, items/s, ETA; redrawn with
  ``\\r`` on a terminal, else one line every few seconds.
- Output: results on stdout, progress and messages on stderr. A problem+json answer is printed as its
  title, detail and every field error. Exit codes: 0 done; 1 an error (or a request that ended
  ``failed``); 2 a usage error; 3 ``cert request`` gave up waiting (the request id is printed: ask
  ``cert status``); 4 a batch downloaded completely with some failed items; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from client.batches import BatchError, download, read_batch_input
from client.sdk import FINAL, ApiError, KmsClient, flat_answer

SESSION_FILE = "session.json"
BATCH_FILE = "batch.json"
SAN_TYPES = {"dns": "dns_name", "ip": "ip_address", "email": "email", "uri": "uri",
             "dns_name": "dns_name", "ip_address": "ip_address"}

EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_ITEMS_FAILED, EXIT_INTERRUPTED = 0, 1, 3, 4, 130


class CliError(Exception):
    """A problem the user can fix, said in one message (exit 1)."""


# -- entry point -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "agent":
        from client.agent.runner import main as agent_main

        return agent_main(args.config, once=args.once, verbose=args.verbose, once_wait=args.wait)
    try:
        result: int = asyncio.run(args.run(args))
        return result
    except ApiError as exc:
        print(describe_problem(exc), file=sys.stderr)
    except (CliError, BatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except aiohttp.ClientError as exc:
        print(f"error: cannot reach the API: {type(exc).__name__}: {exc}", file=sys.stderr)
    except TimeoutError:
        print("error: the API did not answer in time", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def describe_problem(exc: ApiError) -> str:
    """A problem+json answer as lines a person reads: title and status, detail, each field error."""
    problem = exc.problem
    title = problem.get("title") or "request refused"
    errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)]
    detail = str(problem.get("detail") or "")
    if errors and all(str(e.get("message")) in detail for e in errors):
        detail = ""  # the detail only repeats the field errors listed below
    lines = [f"error: {title} ({exc.status})" + (f": {detail}" if detail else "")]
    lines += [f"  {e.get('field')}: {e.get('message')}" for e in errors]
    if exc.status == 401:
        lines.append("  the session is missing, expired or revoked: run `kms-pki login` again")
    if problem.get("requestId"):
        lines.append(f"  request id: {problem['requestId']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kms-pki", description="Hanzo KMS certificate client")
    sub = parser.add_subparsers(dest="command", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help="API base URL (default: the one logged in to)")

    p = sub.add_parser("login", help="log in with a machine identity and keep the session")
    p.add_argument("--url", default=os.environ.get("KMS_URL"), help="API base URL (env KMS_URL)")
    p.add_argument("--client-id", default=os.environ.get("KMS_CLIENT_ID"), help="(env KMS_CLIENT_ID)")
    p.add_argument("--client-secret", default=os.environ.get("KMS_CLIENT_SECRET"),
                   help="(env KMS_CLIENT_SECRET; prefer the variable: arguments are visible to other users)")
    p.set_defaults(run=login)

    cert = sub.add_parser("cert", help="single certificates").add_subparsers(dest="cert_command", required=True)
    p = cert.add_parser("request", parents=[url], help="request a certificate and write its files")
    p.add_argument("--profile", required=True, help="certificate profile id")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--csr", type=Path, help="a PEM CSR (the key stays with you)")
    what.add_argument("--cn", help="common name (the server generates the key)")
    p.add_argument("--san", action="append", default=[], type=_san, metavar="TYPE:VALUE",
                   help="subject alternative name: dns:NAME, ip:ADDR, email:ADDR or uri:URI (repeatable)")
    p.add_argument("--ttl", help="validity, e.g. 30d (default: the profile's)")
    p.add_argument("--key-algorithm", help="e.g. EC_prime256v1, RSA_2048 (default: the profile's)")
    p.add_argument("--out", required=True, type=Path, help="folder for cert.pem, chain.pem and key.pem")
    p.add_argument("--wait", type=int, default=30, help="seconds to wait for the certificate (default 30)")
    p.set_defaults(run=cert_request)

    p = cert.add_parser("status", parents=[url], help="print a certificate request as JSON")
    p.add_argument("request_id")
    p.add_argument("--wait", type=int, default=0, help="seconds to wait for it to be issued or failed")
    p.set_defaults(run=cert_status)

    p = cert.add_parser("revoke", parents=[url], help="revoke a certificate (on its CA's CRL within seconds)")
    p.add_argument("certificate_id")
    p.add_argument("--reason", default="UNSPECIFIED", type=str.upper, choices=REVOCATION_REASONS,
                   help="RFC 5280 reason (default UNSPECIFIED)")
    p.set_defaults(run=cert_revoke)

    p = sub.add_parser("agent", help="keep this host's certificates issued and renewed (the KMS agent's config)")
    p.add_argument("--config", type=Path, default=Path("certificate-agent-config.yaml"),
                   help="the agent's YAML config, v1 or v2 (default certificate-agent-config.yaml; "
                        "or INFISICAL_AGENT_CONFIG_BASE64)")
    p.add_argument("--once", action="store_true",
                   help="do what is due now, then exit: 0 all good, else the reason (see the README)")
    p.add_argument("--wait", type=float, default=120, metavar="SECONDS",
                   help="with --once: how long to wait for a request still being signed (default 120)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs")

    batch = sub.add_parser("batch", help="bulk batches").add_subparsers(dest="batch_command", required=True)
    p = batch.add_parser("submit", parents=[url], help="submit a batch and download its certificates")
    p.add_argument("--profile", required=True, help="certificate profile id")
    p.add_argument("--input", required=True, type=Path,
                   help="a .jsonl file (one JSON object of attributes a line) or a folder of .csr files")
    p.add_argument("--out", required=True, type=Path, help="folder for batch.json and one folder per item")
    p.set_defaults(run=batch_submit)

    p = batch.add_parser("fetch", parents=[url], help="download (or resume downloading) a batch")
    p.add_argument("batch_id")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(run=batch_fetch)
    return parser


def _san(text: str) -> dict[str, str]:
    kind, sep, value = text.partition(":")
    if not sep or not value or kind.lower() not in SAN_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected dns:NAME, ip:ADDR, email:ADDR or uri:URI")
    return {"type": SAN_TYPES[kind.lower()], "value": value}


# -- session -----------------------------------------------------------------------------------------


def config_dir() -> Path:
    if os.environ.get("KMS_CONFIG_DIR"):
        return Path(os.environ["KMS_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kms-pki"


def save_session(url: str, token: str, expires_at: datetime) -> Path:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SESSION_FILE
    session = {"url": url, "accessToken": token, "expiresAt": expires_at.isoformat().replace("+00:00", "Z")}
    write_file(path, json.dumps(session, indent=2) + "\n", mode=0o600)
    return path


def load_session() -> dict[str, str]:
    path = config_dir() / SESSION_FILE
    try:
        session: dict[str, str] = json.loads(path.read_text())
        if missing := {"url", "accessToken", "expiresAt"} - set(session):
            raise KeyError(", ".join(sorted(missing)))
        expires = datetime.fromisoformat(session["expiresAt"].replace("Z", "+00:00"))
    except FileNotFoundError:
        raise CliError("not logged in: run `kms-pki login --url URL --client-id ID --client-secret SECRET`") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{path} is not a session file ({exc!r}): run `kms-pki login` again") from None
    if expires <= datetime.now(UTC):
        raise CliError(f"the session expired at {session['expiresAt']}: run `kms-pki login` again")
    return session


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[KmsClient]:
    session = load_session()
    async with KmsClient(args.url or session["url"], session["accessToken"]) as kms:
        yield kms


async def login(args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--url", args.url), ("--client-id", args.client_id),
                                        ("--client-secret", args.client_secret)) if not value]
    if missing:
        raise CliError(f"missing {', '.join(missing)} (or KMS_URL, KMS_CLIENT_ID, KMS_CLIENT_SECRET)")
    async with KmsClient(args.url) as kms:
        token, expires_in = await kms.login_session(args.client_id, args.client_secret)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
    path = save_session(args.url.rstrip("/"), token, expires_at)
    print(f"logged in to {args.url} as {args.client_id}; the session lasts until "
          f"{expires_at.isoformat().replace('+00:00', 'Z')} ({path})", file=sys.stderr)
    return EXIT_OK


# -- files -------------------------------------------------------------------------------------------


def write_file(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replaces ``path`` atomically (a temporary file in the same folder, then rename) with ``mode``:
    a reader never sees half a file, and a key file is never readable by others, even for a moment."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _make_out_dir(path: Path) -> None:
    # Created 0700 when new: it will hold private keys. An existing folder keeps its mode.
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


# -- cert request / status ---------------------------------------------------------------------------


async def cert_request(args: argparse.Namespace) -> int:
    attributes: dict[str, Any] = {}
    if args.cn:
        attributes["commonName"] = args.cn
    if args.san:
        attributes["altNames"] = args.san
    if args.ttl:
        attributes["ttl"] = args.ttl
    if args.key_algorithm:
        attributes["keyAlgorithm"] = args.key_algorithm
    csr = None
    if args.csr is not None:
        try:
            csr = args.csr.read_text()
        except OSError as exc:
            raise CliError(f"cannot read the CSR: {exc}") from None
    async with _client(args) as kms:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, args.wait)
        result = flat_answer(await kms.submit(args.profile, csr=csr, attributes=attributes or None, wait=args.wait))
        if result["status"] not in FINAL and deadline > loop.time():
            try:
                result = await kms.wait_for(result["certificateRequestId"], timeout=deadline - loop.time())
            except TimeoutError:
                result, _ = await kms.request_status(result["certificateRequestId"])
    for field in ("certificateRequestId", "status", "serialNumber", "certificateId"):
        if result.get(field):
            print(f"{field}: {result[field]}")
    if result["status"] == "failed":
        print(f"error: the request failed: {result.get('errorMessage') or 'no reason given'}", file=sys.stderr)
        return EXIT_ERROR
    if result["status"] != "issued":
        print(f"still {result['status']} after {args.wait}s; ask again with "
              f"`kms-pki cert status {result['certificateRequestId']} --wait 30`", file=sys.stderr)
        return EXIT_PENDING
    _make_out_dir(args.out)
    written = [args.out / "cert.pem", args.out / "chain.pem"]
    write_file(written[0], result["certificate"])
    write_file(written[1], result.get("certificateChain") or "")
    if result.get("privateKey"):
        written.append(args.out / "key.pem")
        write_file(written[2], result["privateKey"], mode=0o600)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return EXIT_OK


REVOCATION_REASONS = ("UNSPECIFIED", "KEY_COMPROMISE", "CA_COMPROMISE", "AFFILIATION_CHANGED", "SUPERSEDED",
                      "CESSATION_OF_OPERATION", "CERTIFICATE_HOLD", "PRIVILEGE_WITHDRAWN", "A_A_COMPROMISE")


async def cert_revoke(args: argparse.Namespace) -> int:
    async with _client(args) as kms:
        result = await kms.revoke(args.certificate_id, args.reason)
    print(json.dumps(result, indent=2))
    return EXIT_OK


async def cert_status(args: argparse.Namespace) -> int:
    async with _client(args) as kms:
        if args.wait > 0:
            try:
                result = await kms.wait_for(args.request_id, timeout=args.wait)
            except TimeoutError:
                result, _ = await kms.request_status(args.request_id)
        else:
            result, _ = await kms.request_status(args.request_id)
    result.pop("privateKey", None)
    print(json.dumps(result, indent=2))
    return EXIT_OK


# -- batches -----------------------------------------------------------------------------------------


def _read_batch_file(out: Path) -> dict[str, Any] | None:
    try:
        saved: dict[str, Any] = json.loads((out / BATCH_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CliError(f"{out / BATCH_FILE} is damaged ({exc})") from None
    return saved


async def batch_submit(args: argparse.Namespace) -> int:
    items, sources = read_batch_input(args.input)
    saved = _read_batch_file(args.out)
    if saved is not None:
        raise CliError(f"{args.out} already holds batch {saved.get('batchId')}: resume it with `kms-pki batch "
                       f"fetch {saved.get('batchId')} --out {args.out}`, or choose another --out")
    async with _client(args) as kms:
        print(f"submitting {len(items)} items from {args.input}", file=sys.stderr, flush=True)
        created = await kms.submit_batch(args.profile, items)
        batch_id, total = str(created["batchId"]), int(created["total"])
        _make_out_dir(args.out)
        # Written before anything else, so that an interrupted run can always be resumed.
        write_file(args.out / BATCH_FILE, json.dumps({
            "batchId": batch_id, "total": total, "url": kms.base_url, "profileId": args.profile,
            "input": str(args.input.resolve()), "submittedAt": _now(), "sources": sources}, indent=2) + "\n")
        print(f"batchId: {batch_id}", flush=True)
        print(f"submitted {total} items ({created.get('failedAtSubmission', 0)} refused at submission); "
              f"downloading into {args.out}", file=sys.stderr)
        failed = await download(kms, batch_id, total, args.out, sources)
        return EXIT_ITEMS_FAILED if failed else EXIT_OK


async def batch_fetch(args: argparse.Namespace) -> int:
    saved = _read_batch_file(args.out)
    if saved is not None and saved.get("batchId") != args.batch_id:
        raise CliError(f"{args.out} holds batch {saved.get('batchId')}, not {args.batch_id}: choose another --out")
    async with _client(args) as kms:
        view, _ = await kms.batch(args.batch_id)
        total = int(view["total"])
        _make_out_dir(args.out)
        if saved is None:
            saved = {"batchId": args.batch_id, "total": total, "url": kms.base_url, "profileId": view.get("profileId")}
            write_file(args.out / BATCH_FILE, json.dumps(saved, indent=2) + "\n")
        print(f"batchId: {args.batch_id}", flush=True)
        failed = await download(kms, args.batch_id, total, args.out, list(saved.get("sources") or []))
        return EXIT_ITEMS_FAILED if failed else EXIT_OK


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


if __name__ == "__main__":
    raise SystemExit(main())
