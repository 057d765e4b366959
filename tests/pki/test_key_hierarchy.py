"""The key hierarchy (DESIGN.md 4.4) under failure: a project's data key is used only once it is committed,
so a transaction that rolls back after sealing the project's first key cannot leave a worker sealing
under a data key that no other process will ever find.

The worker's own code runs in this process (a ``Runtime`` built as ``worker/runtime.py`` builds it, on the
stack's database and key files), so the test decides where its transaction fails; "another process" is a
fresh ``KeyRing`` here, or the stack's real worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import asyncpg
import pytest

from shared.authorities import CreateCaBody, record_ca
from shared.config import Settings
from shared.envelope import load_root_key
from shared.keyring import KeyRing
from tests.api_client import Tenant
from tests.issuance.issuing import MakeTenant, issued, server_key_attributes
from tests.pki_setup import OPEN_POLICY, POLICIES, PROFILES
from tests.stack import Stack
from worker.authorities import create_ca
from worker.ca_keys import CaKeyCache
from worker.runtime import Runtime

SECRET = b"a private key, as far as the key ring knows"


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[Runtime]:
    """The worker's runtime, in this process, against the stack's database and key files."""
    rt = Runtime(Settings(database_url=stack.database_url, root_key=None, root_key_file=stack.root_key_file))
    try:
        yield rt
    finally:
        await (await rt.pool()).close()


async def test_data_key_first_made_in_a_rolled_back_transaction_opens_from_another_key_ring(
        stack: Stack, make_tenant: MakeTenant, runtime: Runtime, db: asyncpg.Connection) -> None:
    project = UUID((await make_tenant("rollback")).project_id)  # a fresh project: no data key yet
    pool = await runtime.pool()
    async with pool.acquire() as conn:
        with pytest.raises(_Rollback):
            async with conn.transaction():
                await runtime.keyring.seal(conn, project, b"never stored", table="certificates", row_id=uuid4())
                raise _Rollback
        row = uuid4()
        blob = await runtime.keyring.seal(conn, project, SECRET, table="certificates", row_id=row)

    # Another process (the API, a second worker) knows only what the database holds.
    other = KeyRing(load_root_key(None, stack.root_key_file))
    assert await other.open(db, project, blob, table="certificates", row_id=row) == SECRET


async def _fail_serial_reservations_of(db: asyncpg.Connection, ca_id: UUID) -> str:
    """A trigger that fails the CA's serial reservation, the statement right after its key is sealed:
    the worker's transaction then rolls back, as on a deadlock or a lost connection. Returns its name."""
    name = f"kms_test_fail_{ca_id.hex}"
    await db.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                     f" BEGIN RAISE EXCEPTION 'injected failure after the CA key was sealed'; END $$")
    await db.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON issued_serials FOR EACH ROW"
                     f" WHEN (NEW.issuer_id = '{ca_id}') EXECUTE FUNCTION {name}()")
    return name


async def _pending_root_ca(pool: asyncpg.Pool, tenant: Tenant) -> UUID:
    """A pending root CA recorded as the API records one, but with no task sent: only this test makes it."""
    body = CreateCaBody.model_validate({"projectId": tenant.project_id, "name": "after rollback", "type": "root",
                                        "commonName": "After Rollback Root", "keyAlgorithm": "EC_prime256v1",
                                        "ttl": "1y"})
    return (await record_ca(pool, body)).id


async def test_ca_whose_first_creation_rolled_back_signs_in_another_worker_process(
        worker: Stack, make_tenant: MakeTenant, runtime: Runtime, db: asyncpg.Connection) -> None:
    tenant = await make_tenant("ca-rollback")  # a fresh project: its first key is this CA's
    ca_id = await _pending_root_ca(await runtime.pool(), tenant)
    cache = CaKeyCache(60)
    trigger = await _fail_serial_reservations_of(db, ca_id)
    try:
        with pytest.raises(asyncpg.RaiseError, match="injected failure"):
            await create_ca(runtime, cache, ca_id)
    finally:
        await db.execute(f"DROP FUNCTION {trigger}() CASCADE")
    assert await create_ca(runtime, cache, ca_id) == "active"  # the retry, in the same worker process

    # The stack's worker, another process, must open the CA key that this process sealed.
    admin = tenant.admin
    policy = await admin.post(POLICIES, {"projectId": tenant.project_id, "name": "rollback", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    profile = await admin.post(PROFILES, {
        "projectId": tenant.project_id, "slug": "rollback", "issuerType": "ca", "caId": str(ca_id),
        "certificatePolicyId": policy.body["id"], "defaults": {"ttl": "30d", "keyAlgorithm": "EC_prime256v1"}})
    assert profile.status == 201, profile.body
    await issued(admin, profile.body["id"], attributes=server_key_attributes("after-rollback.example.test"))
