"""CA private keys at rest (DESIGN.md invariant 4): sealed under a per-project CA data key that the CA root
key wraps, bound to their row, absent from the database dump and the logs in every encoding, and still
usable after ``kms-pki admin rotate-root-key`` (and ``--ca``) once the processes restart with the new keys.

The checks decrypt keys in the test with the stack's own key files, as an operator holding them could:
that proves what the database holds is really the CA's key, sealed, and not something else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shared.secrets.envelope import EnvelopeError, load_root_key, unwrap_data_key
from shared.secrets.keyring import CA_ROOT, ROOT, KeyRing, Purpose
from tests.api_client import ApiClient, Tenant, login, open_tenant
from tests.issuance.checkers import openssl_verify
from tests.issuance.issuing import issued, server_key_attributes
from tests.pki.authorities import ca_body, ca_certificate, create_ca
from tests.pki_setup import OPEN_POLICY, POLICIES, PROFILES
from tests.stack import Stack, free_port
from worker.ca_keys import CA_TABLE

# -- reading what the database holds ---------------------------------------------------------------


async def _sealed_ca_key(db: asyncpg.Connection, ca_id: str) -> tuple[UUID, bytes]:
    row = await db.fetchrow("SELECT project_id, encrypted_private_key FROM certificate_authorities WHERE id = $1",
                            UUID(ca_id))
    assert row is not None and row["encrypted_private_key"] is not None
    return row["project_id"], row["encrypted_private_key"]


async def _open_ca_key(db: asyncpg.Connection, ca_root_key: bytes, ca_id: str) -> bytes:
    """The CA's PKCS#8 DER, decrypted from its row with the given CA root key."""
    project_id, blob = await _sealed_ca_key(db, ca_id)
    return await KeyRing(ca_root_key, purpose=CA_ROOT).open(db, project_id, blob, table=CA_TABLE,
                                                            row_id=UUID(ca_id))


def _secret_scalar(key: Any) -> bytes:
    """The part of a private key that must never leak: RSA's d, the EC scalar, the Ed25519 seed."""
    if isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
        return d.to_bytes((d.bit_length() + 7) // 8, "big")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes((key.curve.key_size + 7) // 8, "big")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.private_bytes_raw()


def _encodings(der: bytes) -> dict[str, str]:
    """Ways a leaked key could appear in a text dump or a log: PEM, base64, bytea hex, and fragments."""
    key = serialization.load_der_private_key(der, password=None)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    secret = _secret_scalar(key)
    middle = len(der) // 2
    return {
        "PEM body line": pem.splitlines()[2],
        "base64 DER": base64.b64encode(der).decode(),
        "hex DER": der.hex(),
        "hex of 32 bytes inside the DER": der[middle:middle + 32].hex(),
        "hex of the secret scalar": secret.hex(),
        "base64 of the secret scalar": base64.b64encode(secret).decode(),
    }


async def _assert_is_key_of(der: bytes, client: ApiClient, ca_id: str) -> None:
    cert = x509.load_pem_x509_certificate((await ca_certificate(client, ca_id))[0].encode())
    key = serialization.load_der_private_key(der, password=None)
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*pub) == cert.public_key().public_bytes(*pub)


def _pg_dump(database_url: str) -> str:
    out = subprocess.run(["pg_dump", "--inserts", database_url], capture_output=True, check=True, timeout=60)
    return out.stdout.decode(errors="replace")


# -- the shared stack ------------------------------------------------------------------------------


@pytest.fixture
async def three_cas(worker: Stack, tenant: Tenant) -> list[str]:
    """An RSA root, an EC intermediate and an Ed25519 intermediate: one key of each family."""
    root = await create_ca(tenant.admin, ca_body(tenant.project_id, "rsa root", key_algorithm="RSA_2048"))
    ids = [root["id"]]
    for algorithm in ("EC_secp384r1", "ED25519"):
        ca = await create_ca(tenant.admin, ca_body(tenant.project_id, f"{algorithm} mid", parent=root["id"],
                                                   key_algorithm=algorithm))
        ids.append(ca["id"])
    return ids


async def test_database_dump_holds_no_ca_private_key_in_any_encoding(
        stack: Stack, tenant: Tenant, three_cas: list[str], db: asyncpg.Connection) -> None:
    ca_root_key = load_root_key(None, stack.ca_root_key_file)
    dump = _pg_dump(stack.database_url)
    assert "PRIVATE KEY" not in dump
    for ca_id in three_cas:
        _, sealed = await _sealed_ca_key(db, ca_id)
        # Control: bytea is dumped as hex, so the searches below look where a key would be.
        assert sealed.hex() in dump
        der = await _open_ca_key(db, ca_root_key, ca_id)
        await _assert_is_key_of(der, tenant.admin, ca_id)
        for name, text in _encodings(der).items():
            assert text not in dump, f"{name} of CA {ca_id} is in the database dump"


async def test_logs_hold_no_ca_private_key(stack: Stack, tenant: Tenant, three_cas: list[str],
                                           db: asyncpg.Connection) -> None:
    ca_root_key = load_root_key(None, stack.ca_root_key_file)
    logs = stack.logs()
    assert three_cas[0] in logs  # the worker did log these CAs' creation
    assert "PRIVATE KEY" not in logs
    for ca_id in three_cas:
        for name, text in _encodings(await _open_ca_key(db, ca_root_key, ca_id)).items():
            assert text not in logs, f"{name} of CA {ca_id} is in a log"


async def test_ca_key_ciphertext_copied_to_another_ca_row_does_not_decrypt(
        stack: Stack, three_cas: list[str], db: asyncpg.Connection) -> None:
    keyring = KeyRing(load_root_key(None, stack.ca_root_key_file), purpose=CA_ROOT)
    first, second = three_cas[0], three_cas[1]
    project_id, blob = await _sealed_ca_key(db, first)
    assert await keyring.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(first))

    # Same project, so the same data key: only the row binding in the associated data tells them apart.
    with pytest.raises(EnvelopeError):
        await keyring.open(db, project_id, blob, table=CA_TABLE, row_id=UUID(second))


# -- root key rotation, on a stack of its own (rotating the shared stack's keys would break other tests) --
# Both root keys are rotated, the root key first: its data keys seal the leaf keys the service generated,
# the CA root key's seal the CA keys.

PURPOSES = [pytest.param(ROOT, id="root-key"), pytest.param(CA_ROOT, id="ca-root-key")]


@dataclass
class Rotated:
    stack: Stack
    old_key_files: dict[str, Path]  # purpose name -> key file
    new_key_files: dict[str, Path]
    cli_outputs: dict[str, dict[str, Any]]
    wrapped_before: dict[str, dict[UUID, bytes]]  # purpose name -> project id -> wrapped data key
    ca_wrapped_between: dict[UUID, bytes]  # the CA data keys after the root key's rotation, before their own
    credentials: dict[str, tuple[str, str]]  # project id -> (client id, client secret)
    roots: dict[str, str]  # project id -> root CA id
    ca_ids: list[str]
    certificate_ids: list[str]  # certificates whose key the service generated


def _write_key(path: Path) -> Path:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    path.chmod(0o600)
    return path


async def _wrapped_keys(database_url: str, purpose: Purpose = ROOT) -> dict[UUID, bytes]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["project_id"]: r["wrapped_key"]
                for r in await conn.fetch("SELECT project_id, wrapped_key FROM project_data_keys WHERE purpose = $1",
                                          purpose.name)}
    finally:
        await conn.close()


async def _as_tenant(stack: Stack, session: aiohttp.ClientSession, creds: tuple[str, str]) -> ApiClient:
    client = ApiClient(session, stack.api_url)
    return client.with_token(await login(client, *creds))


async def _issue_with_server_key(tenant: Tenant, ca_id: str) -> str:
    """A certificate whose key the service generates (so the project gets a root-key data key); its id."""
    policy = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": "open", **OPEN_POLICY})
    assert policy.status == 201, policy.body
    profile = await tenant.admin.post(PROFILES, {
        "projectId": tenant.project_id, "slug": "rotate", "issuerType": "ca", "caId": ca_id,
        "certificatePolicyId": policy.body["certificatePolicy"]["id"], "enrollmentType": "api",
        "apiConfig": {"autoRenew": False}, "defaults": {"ttlDays": 30, "keyAlgorithm": "EC_prime256v1"}})
    assert profile.status == 201, profile.body
    view = await issued(tenant.admin, profile.body["certificateProfile"]["id"],
                        attributes=server_key_attributes("rotate.example.test"))
    certificate_id: str = view["certificateId"]
    return certificate_id


async def _populate(stack: Stack) -> tuple[dict[str, tuple[str, str]], dict[str, str], list[str], list[str]]:
    """Two projects with CAs and a server-generated leaf key each, so two data keys under each root key:
    one EC root with an RSA intermediate, one Ed25519 root."""
    async with aiohttp.ClientSession() as session:
        first = await open_tenant(stack, session, "rotate-one")
        second = await open_tenant(stack, session, "rotate-two")
        root1 = await create_ca(first.admin, ca_body(first.project_id, "root one"))
        mid1 = await create_ca(first.admin, ca_body(first.project_id, "mid one", parent=root1["id"],
                                                    key_algorithm="RSA_2048"))
        root2 = await create_ca(second.admin, ca_body(second.project_id, "root two", key_algorithm="ED25519"))
        certificates = [await _issue_with_server_key(first, mid1["id"]),
                        await _issue_with_server_key(second, root2["id"])]
    credentials = {t.project_id: (t.client_id, t.client_secret) for t in (first, second)}
    roots = {first.project_id: root1["id"], second.project_id: root2["id"]}
    return credentials, roots, [root1["id"], mid1["id"], root2["id"]], certificates


def _rotate(stack: Stack, new_key_file: Path, purpose: Purpose = ROOT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`kms-pki admin rotate-root-key [--ca]`, run as an operator would, with the stack's configuration
    (and the CA root key, for ``--ca``)."""
    flags = ["--ca"] if purpose is CA_ROOT else []
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "admin", "rotate-root-key", "--new-key-file", str(new_key_file), *flags],
        env=env or (stack.worker_env if purpose is CA_ROOT else stack.env), capture_output=True, text=True,
        timeout=60)


@pytest.fixture(scope="module")
def rotated() -> Iterator[Rotated]:
    stack = Stack(name="rotate")
    try:
        stack.create_database()
        stack.start_api()
        stack.start_worker(concurrency=1)
        credentials, roots, ca_ids, certificate_ids = asyncio.run(_populate(stack))
        wrapped_before = {p.name: asyncio.run(_wrapped_keys(stack.database_url, p)) for p in (ROOT, CA_ROOT)}
        old = {ROOT.name: stack.root_key_file, CA_ROOT.name: stack.ca_root_key_file}
        new = {ROOT.name: _write_key(stack.dir / "root-new.key"),
               CA_ROOT.name: _write_key(stack.dir / "ca-root-new.key")}
        outputs = {}
        done = _rotate(stack, new[ROOT.name])
        assert done.returncode == 0, done.stderr
        outputs[ROOT.name] = json.loads(done.stdout)
        between = asyncio.run(_wrapped_keys(stack.database_url, CA_ROOT))
        done = _rotate(stack, new[CA_ROOT.name], CA_ROOT,
                       env={**stack.worker_env, "KMS_ROOT_KEY_FILE": str(new[ROOT.name])})
        assert done.returncode == 0, done.stderr
        outputs[CA_ROOT.name] = json.loads(done.stdout)
        yield Rotated(stack, old, new, outputs, wrapped_before, between, credentials, roots, ca_ids,
                      certificate_ids)
    finally:
        stack.drop()


def _restart(stack: Stack, *, api_key: Path, worker_key: Path, worker_ca_key: Path,
             worker_name: str = "worker") -> None:
    """Stop every process of the stack, then start the API and one worker with the given key files."""
    stack.stop_all()
    stack.env["KMS_ROOT_KEY_FILE"] = str(api_key)
    stack.start_api()
    stack.start_worker(name=worker_name, concurrency=1, env={"KMS_ROOT_KEY_FILE": str(worker_key),
                                                             "KMS_CA_ROOT_KEY_FILE": str(worker_ca_key)})


@pytest.mark.parametrize("purpose", PURPOSES)
def test_rotate_root_key_command_rewraps_every_projects_data_key(rotated: Rotated, purpose: Purpose) -> None:
    after = asyncio.run(_wrapped_keys(rotated.stack.database_url, purpose))
    before = rotated.wrapped_before[purpose.name]
    assert rotated.cli_outputs[purpose.name] == {"rewrappedDataKeys": 2}
    assert set(after) == set(before) == {UUID(p) for p in rotated.credentials}
    for project_id, blob in after.items():
        assert blob != before[project_id]


def test_rotating_the_root_key_leaves_the_ca_data_keys_alone(rotated: Rotated) -> None:
    assert rotated.ca_wrapped_between == rotated.wrapped_before[CA_ROOT.name]


@pytest.mark.parametrize("purpose", PURPOSES)
def test_old_root_key_unwraps_no_data_key_after_rotation(rotated: Rotated, purpose: Purpose) -> None:
    old = load_root_key(None, rotated.old_key_files[purpose.name])
    for project_id, blob in asyncio.run(_wrapped_keys(rotated.stack.database_url, purpose)).items():
        with pytest.raises(EnvelopeError):
            unwrap_data_key(old, blob, project_id=str(project_id), purpose=purpose.binding)


@pytest.mark.parametrize("purpose", PURPOSES)
async def test_new_root_key_unwraps_every_data_key_and_opens_every_key_sealed_under_it(
        rotated: Rotated, purpose: Purpose) -> None:
    new = load_root_key(None, rotated.new_key_files[purpose.name])
    old = load_root_key(None, rotated.old_key_files[purpose.name])
    before = rotated.wrapped_before[purpose.name]
    for project_id, blob in (await _wrapped_keys(rotated.stack.database_url, purpose)).items():
        # The data key itself is unchanged (private-key ciphertexts were not touched); only its wrapping moved.
        assert unwrap_data_key(new, blob, project_id=str(project_id), purpose=purpose.binding) == unwrap_data_key(
            old, before[project_id], project_id=str(project_id), purpose=purpose.binding)
    db = await asyncpg.connect(rotated.stack.database_url)
    try:
        if purpose is CA_ROOT:
            ders = [await _open_ca_key(db, new, ca_id) for ca_id in rotated.ca_ids]
        else:
            ders = []
            for certificate_id in rotated.certificate_ids:
                row = await db.fetchrow("SELECT project_id, encrypted_private_key FROM certificates WHERE id = $1",
                                        UUID(certificate_id))
                ders.append(await KeyRing(new).open(db, row["project_id"], row["encrypted_private_key"],
                                                    table="certificates", row_id=UUID(certificate_id)))
        for der in ders:
            serialization.load_der_private_key(der, password=None)
    finally:
        await db.close()


def test_rotating_again_from_the_retired_key_fails_and_changes_nothing(rotated: Rotated) -> None:
    before = asyncio.run(_wrapped_keys(rotated.stack.database_url))
    stale_env = {**rotated.stack.env, "KMS_ROOT_KEY_FILE": str(rotated.old_key_files[ROOT.name])}
    third = _write_key(rotated.stack.dir / "root-third.key")

    done = _rotate(rotated.stack, third, env=stale_env)

    assert done.returncode != 0
    assert asyncio.run(_wrapped_keys(rotated.stack.database_url)) == before
    for key_file in (rotated.old_key_files[ROOT.name], rotated.new_key_files[ROOT.name], third):
        assert key_file.read_text().strip() not in done.stdout + done.stderr


async def test_processes_restarted_with_the_new_root_keys_sign_under_roots_made_before_rotation(
        rotated: Rotated, tmp_path: Path) -> None:
    stack = rotated.stack
    _restart(stack, api_key=rotated.new_key_files[ROOT.name], worker_key=rotated.new_key_files[ROOT.name],
             worker_ca_key=rotated.new_key_files[CA_ROOT.name])
    async with aiohttp.ClientSession() as session:
        for project_id, root_id in rotated.roots.items():
            client = await _as_tenant(stack, session, rotated.credentials[project_id])
            # The worker must decrypt the root's key (CA data key unwrapped by the new CA root key) to sign this.
            child = await create_ca(client, ca_body(project_id, "after rotation", parent=root_id))
            cert_pem, chain_pem = await ca_certificate(client, child["id"])
            root_pem, _ = await ca_certificate(client, root_id)
            code, out = await openssl_verify(tmp_path / project_id, root_pem, chain_pem, cert_pem)
            assert code == 0, out


async def test_worker_and_api_on_the_retired_root_key_refuse_to_start(rotated: Rotated) -> None:
    """After a rotation, a process still pointed at the old root key would wrap new projects' data keys
    under a key nobody else has; both the worker and the API refuse to start instead, saying why, and the
    old key never reaches a log line."""
    stack = rotated.stack
    stack.stop_all()
    signed_before = await _signatures(stack)
    stale_env = {"KMS_ROOT_KEY_FILE": str(rotated.old_key_files[ROOT.name])}
    worker = stack.spawn("stale-worker", [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                                          "--concurrency", "1", "-Q", "kms.signing"],
                         {**stale_env, "KMS_CA_ROOT_KEY_FILE": str(rotated.new_key_files[CA_ROOT.name])})
    api = stack.spawn("stale-api", [sys.executable, "-m", "api.cli", "serve", "--port", str(free_port())], stale_env)
    for proc in (worker, api):
        assert proc.wait(60) != 0
    for name in ("stale-worker", "stale-api"):
        log = stack.log_path(name).read_text()
        assert "root key (KMS_ROOT_KEY / KMS_ROOT_KEY_FILE) is not the one this database's keys are wrapped under" \
            in log, log[-2000:]
        for key_file in (*rotated.old_key_files.values(), *rotated.new_key_files.values()):
            assert key_file.read_text().strip() not in log
    assert await _signatures(stack) == signed_before


async def test_worker_on_the_retired_ca_root_key_refuses_to_start(rotated: Rotated) -> None:
    stack = rotated.stack
    stack.stop_all()
    signed_before = await _signatures(stack)
    worker = stack.spawn("stale-ca-worker", [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                                             "--concurrency", "1", "-Q", "kms.signing"],
                         {"KMS_ROOT_KEY_FILE": str(rotated.new_key_files[ROOT.name]),
                          "KMS_CA_ROOT_KEY_FILE": str(rotated.old_key_files[CA_ROOT.name])})
    assert worker.wait(60) != 0
    log = stack.log_path("stale-ca-worker").read_text()
    assert "CA root key (KMS_CA_ROOT_KEY / KMS_CA_ROOT_KEY_FILE) is not the one this database's keys are" in log, \
        log[-2000:]
    for key_file in (*rotated.old_key_files.values(), *rotated.new_key_files.values()):
        assert key_file.read_text().strip() not in log
    assert await _signatures(stack) == signed_before


async def _signatures(stack: Stack) -> int:
    db = await asyncpg.connect(stack.database_url)
    try:
        count: int = await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'certificate.sign'")
        return count
    finally:
        await db.close()
