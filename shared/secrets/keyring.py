"""Where private keys are sealed and opened: the root keys, per-project data keys, and their cache.

Two root keys, each wrapping its own data key per project (DESIGN.md 4.4):

- the **root key** (``KMS_ROOT_KEY`` / ``KMS_ROOT_KEY_FILE``), held by the API and the workers, for the
  private keys the service generates for leaf certificates (the API hands them to their owners);
- the **CA root key** (``KMS_CA_ROOT_KEY`` / ``KMS_CA_ROOT_KEY_FILE``), held by workers only, for CA
  private keys: a compromised front end holds no key that opens one.

A process holds its root keys in memory only. Data keys are unwrapped once per project and cached; they
never change on root-key rotation (only their wrapping does), so the cache stays correct across a rotation.

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
from dataclasses import dataclass
from uuid import UUID

from shared.config import Settings
from shared.db import Executor
from shared.db import data_keys as db
from shared.errors import ConfigurationError
from shared.secrets import envelope

# Gives a connection outside the caller's transaction (and outside any pool a caller may have exhausted).
Connector = Callable[[], AbstractAsyncContextManager[Executor]]


@dataclass(frozen=True)
class Purpose:
    """One root key and the data keys it wraps."""

    name: str  # in project_data_keys.purpose, root_key_check.purpose, certificate_authorities.key_sealed_by
    what: str  # for messages
    variable: str  # the setting that holds it (and ``{variable}_FILE``)
    check_label: bytes
    binding: str | None  # bound into each wrapped data key; None for the root key (as before purposes)


ROOT = Purpose("root", "root key", "KMS_ROOT_KEY", b"kms-pki root key check v1", None)
CA_ROOT = Purpose("ca-root", "CA root key", "KMS_CA_ROOT_KEY", b"kms-pki ca root key check v1", "ca-root")


def root_key_from(settings: Settings) -> bytes:
    """The root key, or ConfigurationError: the service refuses to run without one."""
    if settings.root_key is None and settings.root_key_file is None:
        raise ConfigurationError(
            "no root key: set KMS_ROOT_KEY (base64 of 32 random bytes) or KMS_ROOT_KEY_FILE; "
            "`kms-pki dev` generates a development key by itself"
        )
    return envelope.load_root_key(settings.root_key, settings.root_key_file)


def ca_root_key_from(settings: Settings) -> bytes:
    """The CA root key, or ConfigurationError: a worker refuses to run without one (the API never asks)."""
    if settings.ca_root_key is None and settings.ca_root_key_file is None:
        raise ConfigurationError(
            "no CA root key: set KMS_CA_ROOT_KEY (base64 of 32 random bytes) or KMS_CA_ROOT_KEY_FILE for the "
            "workers (never for the API); `kms-pki dev` generates a development key by itself"
        )
    key = envelope.load_root_key(settings.ca_root_key, settings.ca_root_key_file, variable=CA_ROOT.variable,
                                 what=CA_ROOT.what)
    if (settings.root_key is not None or settings.root_key_file is not None) and hmac.compare_digest(
            key, root_key_from(settings)):
        raise ConfigurationError("the CA root key must not be the root key: the API holds the root key, "
                                 "so it could open every CA key")
    return key


def root_key_check_value(root_key: bytes, purpose: Purpose = ROOT) -> bytes:
    """An HMAC under the root key: equal values mean the same key, and it reveals nothing about it."""
    return hmac.new(root_key, purpose.check_label, hashlib.sha256).digest()


class KeyRing:
    """Seals and opens private keys under per-project data keys wrapped by one root key.

    Only a key ring given ``connect`` can seal a project's first key (it creates the data key there);
    without it the key ring opens keys only, as the API's does.
    """

    def __init__(self, root_key: bytes, *, purpose: Purpose = ROOT, connect: Connector | None = None) -> None:
        self._root = root_key
        self.purpose = purpose
        self._connect = connect
        self._data_keys: dict[UUID, bytes] = {}  # committed data keys only

    async def verify(self, conn: Executor) -> None:
        """Refuse to run with a root key other than the one the database's data keys are wrapped under
        (the first process to run records it). Without this, a process on a retired key would wrap new
        projects' data keys under it, and nobody else could open them."""
        mine = root_key_check_value(self._root, self.purpose)
        stored = await db.root_key_check(conn, self.purpose.name, mine)
        if not hmac.compare_digest(stored, mine):
            v = self.purpose.variable
            rotate = "kms-pki admin rotate-root-key" + (" --ca" if self.purpose is CA_ROOT else "")
            raise ConfigurationError(
                f"the {self.purpose.what} ({v} / {v}_FILE) is not the one this database's keys are wrapped "
                f"under; after `{rotate}`, point every process at the new key")

    def _unwrap(self, project_id: UUID, wrapped: bytes) -> bytes:
        return envelope.unwrap_data_key(self._root, wrapped, project_id=str(project_id),
                                        purpose=self.purpose.binding)

    async def _stored(self, conn: Executor, project_id: UUID) -> bytes | None:
        """The project's data key if one is stored. Any row a read sees is committed: no data key is
        ever written inside a caller's transaction (see ``_create``)."""
        cached = self._data_keys.get(project_id)
        if cached is not None:
            return cached
        wrapped = await db.get_wrapped(conn, project_id, self.purpose.name)
        if wrapped is None:
            return None
        key = self._data_keys[project_id] = self._unwrap(project_id, wrapped)
        return key

    async def _create(self, project_id: UUID) -> bytes:
        """Create the project's data key in its own committed statement and return what was committed."""
        if self._connect is None:
            raise RuntimeError("this key ring only opens keys; it cannot create a project's data key")
        fresh = envelope.wrap_data_key(self._root, envelope.new_data_key(), project_id=str(project_id),
                                       purpose=self.purpose.binding)
        async with self._connect() as own:
            # Two processes may race to create it: the insert keeps the first, and both read it back.
            await db.insert_wrapped(own, project_id, self.purpose.name, fresh)
            wrapped = await db.get_wrapped(own, project_id, self.purpose.name)
        assert wrapped is not None
        key = self._data_keys[project_id] = self._unwrap(project_id, wrapped)
        return key

    async def seal(self, conn: Executor, project_id: UUID, plaintext: bytes, *, table: str, row_id: UUID) -> bytes:
        key = await self._stored(conn, project_id) or await self._create(project_id)
        return envelope.encrypt_private_key(key, plaintext, table=table, row_id=str(row_id))

    async def open(self, conn: Executor, project_id: UUID, blob: bytes, *, table: str, row_id: UUID) -> bytes:
        key = await self._stored(conn, project_id)
        if key is None:
            raise envelope.EnvelopeError(f"private key of {table} {row_id} cannot be opened: project "
                                         f"{project_id} has no data key under the {self.purpose.what}")
        return envelope.decrypt_private_key(key, blob, table=table, row_id=str(row_id))


async def rotate_root_key(conn: Executor, old_root: bytes, new_root: bytes, purpose: Purpose = ROOT) -> int:
    """Re-wrap every project's data key of ``purpose`` under ``new_root`` and record its check value; the
    caller holds a transaction, so either everything moves or nothing does. Returns how many keys were
    re-wrapped."""
    stored = await db.root_key_check(conn, purpose.name, root_key_check_value(old_root, purpose))
    if not hmac.compare_digest(stored, root_key_check_value(old_root, purpose)):
        raise ConfigurationError(f"the current {purpose.what} ({purpose.variable} / {purpose.variable}_FILE) is "
                                 "not the one the data keys are wrapped under; nothing was changed")
    wrapped = await db.all_wrapped_for_update(conn, purpose.name)
    rewrapped = envelope.rewrap_data_keys(old_root, new_root, {str(k): v for k, v in wrapped.items()},
                                          purpose=purpose.binding)
    for project_id, blob in rewrapped.items():
        await db.update_wrapped(conn, UUID(project_id), purpose.name, blob)
    await db.set_root_key_check(conn, purpose.name, root_key_check_value(new_root, purpose))
    return len(rewrapped)
