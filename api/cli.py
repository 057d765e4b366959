"""The ``kms-pki`` command (server side: migrate, serve, worker, beat, admin, dev).

Server commands never import ``worker`` into the API process: ``worker`` and ``beat`` exec Celery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.config import Settings, get_settings
from shared.logging import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in {"login", "cert", "batch", "agent"}:
        # Client commands talk HTTP only (client/cli.py); they need no server settings.
        from client.cli import main as client_main

        return client_main(args_list)
    parser = _parser()
    args, rest = parser.parse_known_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    if rest and args.command not in ("worker", "beat"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = get_settings()
    result: int = args.run(args, rest, settings)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kms-pki", description="Hanzo KMS certificate issuance service")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("migrate", help="apply database migrations (idempotent)")
    p.set_defaults(run=_migrate)

    p = sub.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(run=_serve)

    # No argparse help of their own: `kms-pki worker --help` shows Celery's, as every flag goes to it.
    p = sub.add_parser("worker", help="run a Celery worker (extra arguments go to Celery)", add_help=False)
    p.set_defaults(run=_celery("worker"))
    p = sub.add_parser("beat", help="run the periodic scheduler (extra arguments go to Celery)",
                       add_help=False)
    p.set_defaults(run=_celery("beat"))

    p = sub.add_parser("admin", help="administration")
    admin = p.add_subparsers(dest="admin_command", required=True)
    b = admin.add_parser("bootstrap", help="create a project and its first admin identity")
    b.add_argument("--project", required=True)
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(run=_bootstrap)

    u = admin.add_parser("user", help="web UI users")
    users = u.add_subparsers(dest="user_command", required=True)
    c = users.add_parser("create", help="create a web UI user with a role in a project")
    c.add_argument("--email", required=True)
    c.add_argument("--project", required=True, help="the project's id or slug")
    c.add_argument("--role", required=True, choices=["admin", "issuer", "viewer"])
    c.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (else it is asked for)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=_create_user)

    r = admin.add_parser("rotate-root-key", help="re-wrap every project's data key under a new root key")
    r.add_argument("--new-key-file", required=True, type=Path,
                   help="file holding the new root key (base64 of 32 random bytes)")
    r.add_argument("--ca", action="store_true",
                   help="rotate the CA root key (KMS_CA_ROOT_KEY / KMS_CA_ROOT_KEY_FILE) instead")
    r.set_defaults(run=_rotate_root_key)

    p = sub.add_parser("dev", help="run everything on this machine with a demo project")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(run=_dev)
    return parser


def _migrate(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    """Apply the schema migrations; given the CA root key as well, also re-seal CA keys that predate it
    (migration 0007's data step, otherwise done by the first worker to start)."""
    from shared.db.migrate import migrate

    configure_logging(settings.log_level, settings.log_format)
    applied = asyncio.run(migrate(settings.database_url))
    out: dict[str, object] = {"applied": applied}
    if settings.ca_root_key is not None or settings.ca_root_key_file is not None:
        # Worker code (the only code that opens CA keys), in a process of its own: never imported here.
        done = subprocess.run([sys.executable, "-m", "worker.key_migration"], capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return 1
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(out))
    return 0


def _serve(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    import uvloop
    from aiohttp import web

    from api.app import create_app
    from shared.errors import ConfigurationError

    configure_logging(settings.log_level, settings.log_format)
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    try:
        # uvloop: the same asyncio API on libuv, with less event-loop overhead per request.
        # reuse_port: several `serve` processes on one port share its connections (SO_REUSEPORT, Linux).
        web.run_app(create_app(settings), host=host, port=port, access_log=None, print=None,
                    handle_signals=True, loop=uvloop.new_event_loop(), reuse_port=settings.api_reuse_port or None)
    except ConfigurationError as exc:
        print(f"kms-pki serve: refusing to start: {exc}", file=sys.stderr)
        return 1
    return 0


def _celery(kind: str):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
        from shared.errors import ConfigurationError
        from shared.secrets.keyring import ca_root_key_from, root_key_from

        if "--help" not in rest and "-h" not in rest:
            try:
                root_key_from(settings)
                ca_root_key_from(settings)  # workers seal and open CA keys under it
            except ConfigurationError as exc:
                print(f"kms-pki {kind}: refusing to start: {exc}", file=sys.stderr)
                return 1
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", kind, *rest]
        # No -Q: a worker consumes every queue the service declares (shared.tasks), as a plain
        # `celery -A worker.app worker` does.
        if kind == "worker" and not any(a.startswith(("-l", "--loglevel")) for a in rest):
            cmd += ["--loglevel", settings.log_level]
        os.execv(sys.executable, cmd)  # noqa: S606  (a fixed argv: this interpreter running Celery)
        return 0  # not reached
    return run


def _bootstrap(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    from shared import access
    from shared.db.pool import create_pool

    async def go() -> dict[str, str]:
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            project, new = await access.bootstrap_project(pool, args.project)
        finally:
            await pool.close()
        return {"projectId": str(project.id), "projectSlug": project.slug, "clientId": new.identity.client_id,
                "clientSecret": new.client_secret}

    out = asyncio.run(go())
    if args.json:
        print(json.dumps(out))
    else:
        print(f"project      {out['projectId']}\nproject slug {out['projectSlug']}\n"
              f"client id    {out['clientId']}\n"
              f"client secret {out['clientSecret']}  (shown once)")
    return 0


def _create_user(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    import getpass
    from uuid import UUID

    from shared import users
    from shared.db import projects
    from shared.db.pool import create_pool
    from shared.errors import KmsError

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")

    async def go() -> dict[str, str]:
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            try:
                project = await projects.project_by_id(pool, UUID(args.project))
            except ValueError:
                project = await projects.project_by_slug(pool, args.project)
            if project is None:
                raise SystemExit(f"kms-pki: no project {args.project!r}")
            user = await users.create_user(pool, email=args.email, password=password, project_id=project.id,
                                           role=args.role, actor="cli")
        finally:
            await pool.close()
        return {"userId": str(user.id), "email": user.email, "projectId": str(project.id), "role": args.role}

    try:
        out = asyncio.run(go())
    except KmsError as err:
        reasons = "; ".join(f"{e.field}: {e.message}" for e in err.errors) or str(err)
        print(f"kms-pki: {reasons}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out))
    else:
        print(f"user    {out['userId']}\ne-mail  {out['email']}\nproject {out['projectId']}\nrole    {out['role']}")
    return 0


def _rotate_root_key(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    """All data keys move to the new root key in one transaction; then point KMS_ROOT_KEY_FILE at the new
    file and restart the processes. The old root key decrypts nothing afterwards. With ``--ca``, the same
    for the CA root key (KMS_CA_ROOT_KEY_FILE, workers only) and the CA data keys it wraps."""
    import asyncpg

    from shared.errors import ConfigurationError
    from shared.secrets.envelope import EnvelopeError, load_root_key
    from shared.secrets.keyring import CA_ROOT, ROOT, ca_root_key_from, root_key_from, rotate_root_key

    purpose = CA_ROOT if args.ca else ROOT
    try:
        old = ca_root_key_from(settings) if args.ca else root_key_from(settings)
        new = load_root_key(None, args.new_key_file)
    except ConfigurationError as exc:
        print(f"kms-pki: {exc}", file=sys.stderr)
        return 1
    if new == old:
        print(f"the new {purpose.what} is the current one; nothing to do", file=sys.stderr)
        return 2
    has_root_key = settings.root_key is not None or settings.root_key_file is not None
    if args.ca and has_root_key and new == root_key_from(settings):
        print("the new CA root key must not be the root key: the API holds the root key", file=sys.stderr)
        return 2

    async def go() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            async with conn.transaction():
                return await rotate_root_key(conn, old, new, purpose)
        finally:
            await conn.close()

    try:
        count = asyncio.run(go())
    except (ConfigurationError, EnvelopeError) as exc:
        print(f"kms-pki: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"rewrappedDataKeys": count}))
    return 0


def _dev(args: argparse.Namespace, rest: list[str], settings: Settings) -> int:
    from api.dev import run_dev

    return run_dev(settings, port=args.port)


if __name__ == "__main__":
    raise SystemExit(main())
