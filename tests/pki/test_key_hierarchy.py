"""The key hierarchy (DESIGN.md 4.4).

- A project's data key is used only once it is committed, so a transaction that rolls back after sealing
  the project's first key cannot leave a worker sealing under a data key that no other process will
  ever find.
- CA keys are out of the front end's reach: sealed under the CA root key, which only workers and beat
  are given; the root key the API holds opens none, and CA keys sealed before migration 0007 are
  re-sealed by ``kms-pki migrate`` (given the CA root key) and by every worker at start-up.

The worker's own code runs in this process where a test must decide where a transaction fails (a
``Runtime`` built as ``worker/runtime.py`` builds it, on the stack's database and key files); "another
process" is a fresh ``KeyRing`` here, or the stack's real worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from api.authorities.schemas import CreateCaBody
from shared.authorities import record_ca
from shared.config import Settings
from shared.db.pool import dedicated
from shared.secrets.envelope import EnvelopeError, load_root_key
from shared.secrets.keyring import CA_ROOT, ROOT, KeyRing, Purpose
from tests.api_client import Tenant
from tests.issuance.issuing import MakeTenant, issued, server_key_attributes
from tests.pki.authorities import ca_body, create_ca
from tests.pki_setup import OPEN_POLICY, POLICIES, PROFILES
from tests.stack import Stack, free_port
from worker import authorities
from worker.ca_keys import CA_TABLE, CaKeyCache
from worker.runtime import Runtime

SECRET = b"a private key, as far as the key ring knows"


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[Runtime]:
    """The worker's runtime, in this process, against the stack's database and key files."""
    rt = Runtime(Settings(database_url=stack.database_url, root_key=None, root_key_file=stack.root_key_file,
                          ca_root_key=None, ca_root_key_file=stack.ca_root_key_file))
    try:
        yield rt
    finally:
        await (await rt.pool()).close()


def _key_file(stack: Stack, purpose: Purpose) -> Path:
    return stack.ca_root_key_file if purpose is CA_ROOT else stack.root_key_file


# -- item: a data key is used only once committed ------------------------------------------------------


@pytest.mark.parametrize("purpose", [pytest.param(ROOT, id="root-key"), pytest.param(CA_ROOT, id="ca-root-key")])
async def test_data_key_first_made_in_a_rolled_back_transaction_opens_from_another_key_ring(
        stack: Stack, make_tenant: MakeTenant, runtime: Runtime, db: asyncpg.Connection, purpose: Purpose) -> None:
    keyring = runtime.ca_keyring if purpose is CA_ROOT else runtime.keyring
    project = UUID((await make_tenant("rollback")).project_id)  # a fresh project: no data key yet
    pool = await runtime.pool()
    async with pool.acquire() as conn:
        with pytest.raises(_Rollback):
            async with conn.transaction():
                await keyring.seal(conn, project, b"never stored", table="certificates", row_id=uuid4())
                raise _Rollback
        row = uuid4()
        blob = await keyring.seal(conn, project, SECRET, table="certificates", row_id=row)

    # Another process (the API, a second worker) knows only what the database holds.
    other = KeyRing(load_root_key(None, _key_file(stack, purpose)), purpose=purpose)
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
    body = CreateCaBody.model_validate({"projectId": tenant.project_id, "name": "after-rollback",
                                        "configuration": {"type": "root", "commonName": "After Rollback Root",
                                                          "keyAlgorithm": "EC_prime256v1", "ttl": "1y"}})
    return (await record_ca(pool, body.new_ca())).id


async def test_ca_whose_first_creation_rolled_back_signs_in_another_worker_process(
        worker: Stack, make_tenant: MakeTenant, runtime: Runtime, db: asyncpg.Connection) -> None:
    tenant = await make_tenant("ca-rollback")  # a fresh project: its first key is this CA's
    ca_id = await _pending_root_ca(await runtime.pool(), tenant)
    cache = CaKeyCache(runtime.ca_keyring, 60)
    trigger = await _fail_serial_reservations_of(db, ca_id)
    try:
        with pytest.raises(asyncpg.RaiseError, match="injected failure"):
            await authorities.create_ca(runtime, cache, ca_id)
    finally:
        await db.execute(f"DROP FUNCTION {trigger}() CASCADE")
    assert await authorities.create_ca(runtime, cache, ca_id) == "active"  # the retry, in the same process

    # The stack's worker, another process, must open the CA key that this process sealed.
    await _issue_one(tenant, str(ca_id))


async def _issue_one(tenant: Tenant, ca_id: str) -> str:
    """A policy and a profile on the CA, and one certificate with a server-generated key issued through the
    stack (API and worker) under it; the certificate's id."""
    slug = f"p{uuid4().hex[:8]}"
    policy = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": slug, **OPEN_POLICY})
    assert policy.status == 201, policy.body
    profile = await tenant.admin.post(PROFILES, {
        "projectId": tenant.project_id, "slug": slug, "issuerType": "ca", "caId": ca_id,
        "certificatePolicyId": policy.body["certificatePolicy"]["id"], "enrollmentType": "api",
        "apiConfig": {"autoRenew": False}, "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1"}})
    assert profile.status == 201, profile.body
    view = await issued(tenant.admin, profile.body["certificateProfile"]["id"],
                        attributes=server_key_attributes(f"{slug}.example.test"))
    certificate_id: str = view["certificateId"]
    return certificate_id


# -- item: CA keys out of the front end's reach --------------------------------------------------------


async def _sealed_ca_key(db: asyncpg.Connection, ca_id: str) -> tuple[UUID, bytes, str]:
    row = await db.fetchrow("SELECT project_id, encrypted_private_key, key_sealed_by FROM certificate_authorities"
                            " WHERE id = $1", UUID(ca_id))
    assert row is not None and row["encrypted_private_key"] is not None
    return row["project_id"], row["encrypted_private_key"], row["key_sealed_by"]


def _key_rings(stack: Stack) -> tuple[KeyRing, KeyRing]:
    """(root, CA root) key rings as a process given each key file has them."""
    connect = partial(dedicated, stack.database_url)
    return (KeyRing(load_root_key(None, stack.root_key_file), connect=connect),
            KeyRing(load_root_key(None, stack.ca_root_key_file), purpose=CA_ROOT, connect=connect))


def test_api_process_is_not_given_the_ca_root_key(stack: Stack, api_url: str) -> None:
    environ = Path(f"/proc/{stack.processes['api'].pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert "KMS_ROOT_KEY_FILE" in names  # control: this is the API's environment
    assert not names & {"KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE"}


async def test_root_key_the_api_holds_does_not_open_a_ca_key(
        stack: Stack, worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection) -> None:
    tenant = await make_tenant("front-end")
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "out of reach"))
    await _issue_one(tenant, ca["id"])  # the project now has a data key under the root key too
    project_id, blob, sealed_by = await _sealed_ca_key(db, ca["id"])
    assert sealed_by == "ca-root"
    _, ca_root = _key_rings(stack)
    assert await ca_root.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(ca["id"]))  # control

    # What an API process can do with everything it is given: KMS_ROOT_KEY and the database.
    api_keyring = KeyRing(load_root_key(None, stack.root_key_file))
    with pytest.raises(EnvelopeError, match="does not authenticate"):
        await api_keyring.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(ca["id"]))


def test_api_given_the_ca_root_key_refuses_to_start(stack: Stack) -> None:
    done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", str(free_port())],
                          env=stack.worker_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "KMS_CA_ROOT_KEY / KMS_CA_ROOT_KEY_FILE is set for the API" in done.stderr, done.stderr
    assert stack.ca_root_key_file.read_text().strip() not in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_kms_pki_worker_and_beat_without_a_ca_root_key_refuse_to_start_with_one_line(
        stack: Stack, command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "api.cli", command], env=stack.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"kms-pki {command}: refusing to start: no CA root key: set KMS_CA_ROOT_KEY (base64 of 32 random bytes) "
        "or KMS_CA_ROOT_KEY_FILE for the workers (never for the API); `kms-pki dev` generates a development "
        "key by itself"]


def test_worker_whose_ca_root_key_is_the_root_key_refuses_to_start(stack: Stack) -> None:
    env = {**stack.env, "KMS_CA_ROOT_KEY_FILE": str(stack.root_key_file)}
    done = subprocess.run([sys.executable, "-m", "api.cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "the CA root key must not be the root key" in done.stderr, done.stderr


async def _make_old_style(stack: Stack, db: asyncpg.Connection, ca_id: str) -> None:
    """Seal the CA's key as it was sealed before migration 0007: under the project data key the root key
    wraps, marked ``root``."""
    project_id, blob, _ = await _sealed_ca_key(db, ca_id)
    root, ca_root = _key_rings(stack)
    der = await ca_root.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(ca_id))
    old = await root.seal(db, project_id, der, table=CA_TABLE, row_id=UUID(ca_id))
    await db.execute("UPDATE certificate_authorities SET encrypted_private_key = $2, key_sealed_by = 'root'"
                     " WHERE id = $1", UUID(ca_id), old)
    assert await root.open(db, project_id, old, table=CA_TABLE, row_id=UUID(ca_id)) == der  # control


async def _assert_resealed_under_the_ca_root_key_only(stack: Stack, db: asyncpg.Connection, ca_id: str) -> None:
    project_id, blob, sealed_by = await _sealed_ca_key(db, ca_id)
    assert sealed_by == "ca-root"
    root, ca_root = _key_rings(stack)
    assert await ca_root.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(ca_id))
    with pytest.raises(EnvelopeError):
        await root.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(ca_id))


async def test_kms_pki_migrate_given_the_ca_root_key_reseals_old_ca_keys_which_then_sign(
        stack: Stack, worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection) -> None:
    tenant = await make_tenant("reseal-migrate")
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "sealed before 0007"))
    await _make_old_style(stack, db, ca["id"])

    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=stack.worker_env, capture_output=True,
                          text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["applied"] == [] and out["resealedCaKeys"] >= 1, out
    await _assert_resealed_under_the_ca_root_key_only(stack, db, ca["id"])
    await _issue_one(tenant, ca["id"])


async def test_worker_start_reseals_old_ca_keys_which_then_sign(
        stack: Stack, worker: Stack, make_tenant: MakeTenant, db: asyncpg.Connection) -> None:
    tenant = await make_tenant("reseal-worker")
    ca = await create_ca(tenant.admin, ca_body(tenant.project_id, "sealed before 0007"))
    await _make_old_style(stack, db, ca["id"])

    stack.start_worker(name="resealing-worker", concurrency=1)  # returns once it answers a ping
    try:
        await _assert_resealed_under_the_ca_root_key_only(stack, db, ca["id"])
        await _issue_one(tenant, ca["id"])
    finally:
        stack.stop("resealing-worker")


def test_kms_pki_migrate_without_the_ca_root_key_reseals_nothing(stack: Stack) -> None:
    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=stack.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"applied": []}


def test_kms_pki_migrate_with_a_wrong_ca_root_key_fails_in_one_line(worker: Stack, tmp_path: Path) -> None:
    # The worker fixture has recorded the right CA root key's check value first.
    wrong = tmp_path / "wrong-ca-root.key"
    wrong.write_bytes(uuid4().bytes + uuid4().bytes)  # 32 raw bytes
    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"],
                          env={**worker.env, "KMS_CA_ROOT_KEY_FILE": str(wrong)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "kms-pki: the CA root key (KMS_CA_ROOT_KEY / KMS_CA_ROOT_KEY_FILE) is not the one this database's keys "
        "are wrapped under; after `kms-pki admin rotate-root-key --ca`, point every process at the new key"]
