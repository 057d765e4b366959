"""Where private keys are sealed and opened: the root key, per-project data keys, and their cache.

A process holds the root key in memory only (from ``KMS_ROOT_KEY`` / ``KMS_ROOT_KEY_FILE``). Data
keys are unwrapped once per project and cached; they never change on root-key rotation (only their
wrapping does), so the cache stays correct across a rotation.

Only committed data keys are ever used or cached. A new one is created in a statement of its own, on a
connection of its own, and read back from there: were it inserted inside the caller's transaction (a CA
being created, say), a rollback would leave this process sealing later keys under a data key that exists
nowhere, and no other process could ever open them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from uuid import UUID

from shared import envelope
from shared.config import Settings
from shared.db import Executor
from shared.db import data_keys as db
from shared.errors import ConfigurationError

# Gives a connection outside the caller's transaction (and outside any pool a caller may have exhausted).
Connector = Callable[[], AbstractAsyncContextManager[Executor]]


def root_key_from(settings: Settings) -> bytes:
    """The root key, or ConfigurationError: the service refuses to run without one."""
    if settings.root_key is None and settings.root_key_file is None:
        raise ConfigurationError(
            "no root key: set KMS_ROOT_KEY (base64 of 32 random bytes) or KMS_ROOT_KEY_FILE; "
            "`kms-pki dev` generates a development key by itself"
        )
    return envelope.load_root_key(settings.root_key, settings.root_key_file)


def root_key_check_value(root_key: bytes) -> bytes:
    """An HMAC under the root key: equal values mean the same key, and it reveals nothing about it."""
    return hmac.new(root_key, b"kms-pki root key check v1", hashlib.sha256).digest()


class KeyRing:
    """Seals and opens private keys under per-project data keys wrapped by one root key.

    Only a key ring given ``connect`` can seal a project's first key (it creates the data key there);
    without it the key ring opens keys only, as the API's does.
    """

    def __init__(self, root_key: bytes, *, connect: Connector | None = None) -> None:
        self._root = root_key
        self._connect = connect
        self._data_keys: dict[UUID, bytes] = {}  # committed data keys only

    async def verify(self, conn: Executor) -> None:
        """Refuse to run with a root key other than the one the database's data keys are wrapped under
        (the first process to run records it). Without this, a process on a retired key would wrap new
        projects' data keys under it, and nobody else could open them."""
        mine = root_key_check_value(self._root)
        stored = await db.root_key_check(conn, mine)
        if not hmac.compare_digest(stored, mine):
            raise ConfigurationError(
                "the root key (KMS_ROOT_KEY / KMS_ROOT_KEY_FILE) is not the one this database's keys are "
                "wrapped under; after `kms-pki admin rotate-root-key`, point every process at the new key")

    async def _stored(self, conn: Executor, project_id: UUID) -> bytes | None:
        """The project's data key if one is stored. Any row a read sees is committed: no data key is
        ever written inside a caller's transaction (see ``_create``)."""
        cached = self._data_keys.get(project_id)
        if cached is not None:
            return cached
        wrapped = await db.get_wrapped(conn, project_id)
        if wrapped is None:
            return None
        key = envelope.unwrap_data_key(self._root, wrapped, project_id=str(project_id))
        self._data_keys[project_id] = key
        return key

    async def _create(self, project_id: UUID) -> bytes:
        """Create the project's data key in its own committed statement and return what was committed."""
        if self._connect is None:
            raise RuntimeError("this key ring only opens keys; it cannot create a project's data key")
        fresh = envelope.new_data_key()
        async with self._connect() as own:
            # Two processes may race to create it: the insert keeps the first, and both read it back.
            await db.insert_wrapped(
                own, project_id, envelope.wrap_data_key(self._root, fresh, project_id=str(project_id)))
            wrapped = await db.get_wrapped(own, project_id)
        assert wrapped is not None
        key = envelope.unwrap_data_key(self._root, wrapped, project_id=str(project_id))
        self._data_keys[project_id] = key
        return key

    async def seal(self, conn: Executor, project_id: UUID, plaintext: bytes, *, table: str, row_id: UUID) -> bytes:
        key = await self._stored(conn, project_id) or await self._create(project_id)
        return envelope.encrypt_private_key(key, plaintext, table=table, row_id=str(row_id))

    async def open(self, conn: Executor, project_id: UUID, blob: bytes, *, table: str, row_id: UUID) -> bytes:
        key = await self._stored(conn, project_id)
        if key is None:
            raise envelope.EnvelopeError(
                f"private key of {table} {row_id} cannot be opened: project {project_id} has no data key")
        return envelope.decrypt_private_key(key, blob, table=table, row_id=str(row_id))

async def rotate_root_key(conn: Executor, old_root: bytes, new_root: bytes) -> int:
    """Re-wrap every project's data key under ``new_root`` and record its check value; the caller holds a
    transaction, so either everything moves or nothing does. Returns how many keys were re-wrapped."""
    stored = await db.root_key_check(conn, root_key_check_value(old_root))
    if not hmac.compare_digest(stored, root_key_check_value(old_root)):
        raise ConfigurationError("the current root key (KMS_ROOT_KEY / KMS_ROOT_KEY_FILE) is not the one the "
                                 "data keys are wrapped under; nothing was changed")
    wrapped = await db.all_wrapped_for_update(conn)
    rewrapped = envelope.rewrap_data_keys(old_root, new_root, {str(k): v for k, v in wrapped.items()})
    for project_id, blob in rewrapped.items():
        await db.update_wrapped(conn, UUID(project_id), blob)
    await db.set_root_key_check(conn, root_key_check_value(new_root))
    return len(rewrapped)
