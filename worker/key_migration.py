"""The data step of migration 0007: CA keys sealed under the project data key (which the API's root key
unwraps) are re-sealed under the project's CA data key (which only the CA root key unwraps).

It needs both root keys, so only a worker process runs it: every worker at start-up and before its first
task (``prepare_keys``), and ``kms-pki migrate`` when the CA root key is configured (it runs
``python -m worker.key_migration``, so the API's code never imports this module). All of it is one
transaction under an advisory lock: a second worker waits, then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from functools import partial

import asyncpg

from shared.config import Settings, get_settings
from shared.db import authorities as db
from shared.db.pool import dedicated
from shared.errors import ConfigurationError
from shared.secrets.envelope import EnvelopeError
from shared.secrets.keyring import CA_ROOT, KeyRing, ca_root_key_from, root_key_from
from worker.ca_keys import CA_TABLE

log = logging.getLogger("kms.worker")


def key_rings(settings: Settings) -> tuple[KeyRing, KeyRing]:
    """The worker's key rings: (root, CA root). ConfigurationError when either key is missing or bad."""
    connect = partial(dedicated, settings.database_url)
    root = KeyRing(root_key_from(settings), connect=connect)
    return root, KeyRing(ca_root_key_from(settings), purpose=CA_ROOT, connect=connect)


async def reseal_ca_keys(conn: asyncpg.Connection, root: KeyRing, ca: KeyRing) -> int:
    """Re-seal every CA key still sealed under ``root`` with ``ca``, in one transaction. Returns how many
    were re-sealed. A key that no longer opens is left as it is and logged: it cannot sign either way, and
    it must not keep every other CA from moving."""
    moved = 0
    async with conn.transaction():
        for ca_id, project_id, blob in await db.lock_keys_sealed_by(conn, root.purpose.name):
            try:
                der = await root.open(conn, project_id, blob, table=CA_TABLE, row_id=ca_id)
            except EnvelopeError as exc:
                log.error("CA key not re-sealed: it does not open under the root key",
                          extra={"ca_id": str(ca_id), "error": str(exc)})
                continue
            sealed = await ca.seal(conn, project_id, der, table=CA_TABLE, row_id=ca_id)
            await db.reseal_key(conn, ca_id, sealed, ca.purpose.name)
            moved += 1
    if moved:
        log.info("CA keys re-sealed under the CA root key", extra={"count": moved})
    return moved


async def prepare_keys(conn: asyncpg.Connection, root: KeyRing, ca: KeyRing) -> int:
    """Before a worker signs anything: both root keys are the database's (ConfigurationError if not),
    and no CA key is left under the root key. Returns how many keys were re-sealed."""
    await root.verify(conn)
    await ca.verify(conn)
    return await reseal_ca_keys(conn, root, ca)


async def _run(settings: Settings) -> int:
    root, ca = key_rings(settings)
    async with dedicated(settings.database_url) as conn:
        return await prepare_keys(conn, root, ca)


def main() -> int:
    """``python -m worker.key_migration``: prints ``{"resealedCaKeys": n}``; one line and exit 1 on a
    configuration error (a missing or wrong root key)."""
    try:
        count = asyncio.run(_run(get_settings()))
    except ConfigurationError as exc:
        print(f"kms-pki: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"resealedCaKeys": count}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
