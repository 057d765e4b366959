"""``kms-pki dev``: the whole service on one machine, for trying it out.

Runs migrations, ensures a demo project with an admin identity, starts a Celery worker and beat as
child processes, prints credentials and a curl line, then serves the API until interrupted. State
(demo credentials, and the root key and CA root key unless configured) lives in ``.kms-dev/`` in the
current directory, so a second run reuses it. Only the worker and beat children get the CA root key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.logging import configure_logging

DEV_DIR = Path(".kms-dev")


async def _prepare(settings: Settings, saved: dict[str, Any] | None) -> dict[str, Any]:
    """Migrate, then reuse the saved demo project if it still exists, else create one."""
    from uuid import UUID

    from shared import access
    from shared.db.migrate import migrate
    from shared.db.pool import create_pool
    from shared.db.projects import project_exists

    await migrate(settings.database_url)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        if saved and await project_exists(pool, UUID(saved["projectId"])):
            return saved
        project_id, new = await access.bootstrap(pool, "demo")
        return {"projectId": str(project_id), "clientId": new.identity.client_id,
                "clientSecret": new.client_secret}
    finally:
        await pool.close()


def _load_saved() -> dict[str, Any] | None:
    path = DEV_DIR / "demo.json"
    return json.loads(path.read_text()) if path.exists() else None


def _save(creds: dict[str, Any]) -> None:
    DEV_DIR.mkdir(mode=0o700, exist_ok=True)
    path = DEV_DIR / "demo.json"
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)


def _dev_key_file(name: str, what: str, variable: str) -> Path:
    """A development key in .kms-dev/, generated on first use (dev only; production sets the variable)."""
    path = DEV_DIR / name
    if not path.exists():
        DEV_DIR.mkdir(mode=0o700, exist_ok=True)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        path.chmod(0o600)
        print(f"generated a development {what} at {path} (dev only; production must set {variable}_FILE)")
    return path.resolve()


def _dev_root_key(settings: Settings) -> Settings:
    """Under `kms-pki dev` only: with no root key configured, generate one into .kms-dev/root.key."""
    if settings.root_key or settings.root_key_file:
        return settings
    path = _dev_key_file("root.key", "root key", "KMS_ROOT_KEY")
    os.environ["KMS_ROOT_KEY_FILE"] = str(path)  # for the worker and beat children
    return settings.model_copy(update={"root_key_file": path})


def _dev_ca_root_key(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """The API's settings without the CA root key, and the environment of the worker and beat children,
    which hold it: the configured one, else one generated into .kms-dev/ca-root.key. It goes to the
    children only; this process serves the API, which must not hold it (DESIGN.md 4.4)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE")}
    if settings.ca_root_key:
        env["KMS_CA_ROOT_KEY"] = settings.ca_root_key
    elif settings.ca_root_key_file:
        env["KMS_CA_ROOT_KEY_FILE"] = str(settings.ca_root_key_file)
    else:
        env["KMS_CA_ROOT_KEY_FILE"] = str(_dev_key_file("ca-root.key", "CA root key", "KMS_CA_ROOT_KEY"))
    for variable in ("KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE"):
        os.environ.pop(variable, None)
    return settings.model_copy(update={"ca_root_key": None, "ca_root_key_file": None}), env


def run_dev(settings: Settings, *, port: int | None = None) -> int:
    settings = settings.model_copy(update={"log_format": "console"})
    settings = _dev_root_key(settings)
    settings, child_env = _dev_ca_root_key(settings)
    if port:
        settings = settings.model_copy(update={"api_port": port})
    configure_logging(settings.log_level, "console")
    creds = asyncio.run(_prepare(settings, _load_saved()))
    _save(creds)

    env = {**child_env, "KMS_LOG_FORMAT": "console"}
    children = [
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--concurrency", "2",
                          "--loglevel", "INFO"], env=env),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO",
                          "--schedule", str(DEV_DIR / "celerybeat-schedule")], env=env),
    ]
    try:
        asyncio.run(_serve(settings, creds))
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


async def _serve(settings: Settings, creds: dict[str, Any]) -> None:
    """Serve the API, make the demo PKI through it (as a user would), print how to use it, run until ^C."""
    from aiohttp import web

    from api.app import create_app
    from client.demo import ensure_demo_pki
    from client.sdk import KmsClient

    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api_host, settings.api_port).start()
    base = f"http://{settings.api_host}:{settings.api_port}"
    try:
        async with KmsClient(base) as kms:
            await kms.login(creds["clientId"], creds["clientSecret"])
            profile = await ensure_demo_pki(kms, creds["projectId"])
        print(_banner(base, creds, profile["id"]), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _banner(base: str, creds: dict[str, Any], profile_id: str) -> str:
    login = (f"curl -s -X POST {base}/api/v1/auth/universal-auth/login -H 'Content-Type: application/json' "
             f"-d '{{\"clientId\":\"{creds['clientId']}\",\"clientSecret\":\"{creds['clientSecret']}\"}}'")
    return f"""
Hanzo KMS PKI (dev) is running on {base}   (Ctrl-C stops it; state is kept in .kms-dev/ and the database)
  project         {creds['projectId']}
  client id       {creds['clientId']}
  client secret   {creds['clientSecret']}
  demo profile    {profile_id}  (demo-web: *.demo.internal, EC P-256, 30 days)

Issue a certificate (the server makes the key; ?wait=10 returns it in the first answer):
  TOKEN=$({login} | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
  curl -s -X POST '{base}/api/v1/cert-manager/certificates?wait=10' -H "Authorization: Bearer $TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{{"profileId":"{profile_id}","attributes":{_DEMO_ATTRIBUTES}}}'
"""


_DEMO_ATTRIBUTES = '{"commonName":"web.demo.internal","altNames":[{"type":"dns_name","value":"web.demo.internal"}]}'
