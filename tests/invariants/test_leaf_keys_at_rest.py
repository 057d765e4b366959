"""DESIGN.md 4.4 for the leaf keys the server generates (RSA, EC, Ed25519), on every path that makes
one (single request, batch item, renewal): the key, as the API hands it out, appears in no encoding in
the database dump, the stack's logs or any message that passed through the broker; and a ciphertext
copied onto another certificate's row does not open there.

The broker is observed with Redis ``MONITOR`` while the keys are issued, so messages the worker
consumed within milliseconds are seen as well as any still queued.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from shared.tasks import ready_channel
from tests.api_client import Tenant, open_tenant
from tests.invariants.key_leaks import BrokerTap, found_in, leak_forms
from tests.invariants.observing import issued_batch, renewed, run_sync
from tests.issuance.issuing import CERTIFICATES, issued, server_key_attributes
from tests.pki_setup import make_pki
from tests.stack import Stack

KEY_ALGORITHMS = ("RSA_2048", "EC_prime256v1", "ED25519")


@dataclass(frozen=True)
class LeafKey:
    path: str
    certificate_id: str
    request_id: str
    pem: str


@dataclass
class Issued:
    project_id: str
    keys: dict[str, list[LeafKey]] = field(default_factory=dict)  # by key algorithm
    broker_texts: list[str] = field(default_factory=list)


def _key(path: str, view: dict[str, object]) -> LeafKey:
    pem = view["privateKey"]
    assert isinstance(pem, str) and "PRIVATE KEY" in pem, view
    return LeafKey(path, str(view["certificateId"]), str(view["certificateRequestId"]), pem)


async def _issue_server_keys(stack: Stack) -> Issued:
    async with aiohttp.ClientSession() as session:
        tenant = await open_tenant(stack, session, "leaf-keys")
        admin = tenant.admin
        pki = await make_pki(admin, tenant.project_id)
        out = Issued(tenant.project_id)
        for algorithm in KEY_ALGORITHMS:
            tag = algorithm.lower().replace("_", "-")
            single = await issued(admin, pki.profile_id,
                                  attributes=server_key_attributes(f"{tag}.example.test", algorithm))
            again = await renewed(admin, single["certificateId"])
            items = await issued_batch(admin, pki.profile_id, [
                {"attributes": server_key_attributes(f"{tag}-{i}.example.test", algorithm)} for i in range(2)])
            out.keys[algorithm] = [_key("single request", single), _key("renewal", again),
                                   *(_key("batch item", item) for item in items)]
    return out


@pytest.fixture(scope="module")
def issued_keys(worker: Stack) -> Issued:
    with BrokerTap(worker.broker_url, worker.redis_db) as tap:
        out: Issued = run_sync(_issue_server_keys(worker))
    out.broker_texts = tap.texts()
    return out


def _pg_dump(stack: Stack) -> str:
    done = subprocess.run(["pg_dump", "--data-only", stack.database_url], capture_output=True, check=True,
                          timeout=120)
    return done.stdout.decode(errors="replace")


@pytest.mark.parametrize("algorithm", KEY_ALGORITHMS)
async def test_server_generated_leaf_key_is_in_no_encoding_in_the_database_dump(
        algorithm: str, issued_keys: Issued, stack: Stack, db: asyncpg.Connection) -> None:
    dump = _pg_dump(stack)
    assert "PRIVATE KEY" not in dump
    for key in issued_keys.keys[algorithm]:
        sealed = await db.fetchval("SELECT encrypted_private_key FROM certificates WHERE id = $1",
                                   UUID(key.certificate_id))
        # Control: the row is in the dump (bytea as hex), so the searches look where a key would be.
        assert sealed and sealed.hex() in dump.lower(), key
        assert found_in(leak_forms(key.pem), dump) == [], (key.path, key.certificate_id)


@pytest.mark.parametrize("algorithm", KEY_ALGORITHMS)
async def test_server_generated_leaf_key_is_in_no_log_line(algorithm: str, issued_keys: Issued, stack: Stack) -> None:
    logs = stack.logs()
    assert "PRIVATE KEY" not in logs
    for key in issued_keys.keys[algorithm]:
        # Control: the worker logged the task that carried this request (Celery logs its arguments), or
        # the ready claim that took it (worker.issuance names the requests it claimed as ready).
        assert key.request_id in logs, (key.path, "no log line names this request")
        assert found_in(leak_forms(key.pem), logs) == [], (key.path, key.certificate_id)


@pytest.mark.parametrize("algorithm", KEY_ALGORITHMS)
async def test_server_generated_leaf_key_is_in_no_broker_message(algorithm: str, issued_keys: Issued,
                                                                 worker: Stack) -> None:
    broker = "\n".join(issued_keys.broker_texts)
    # Control: the tap saw (and decoded) the task messages that carried these very requests. A single
    # request or a renewal heard on the fast doorbell (worker.ready_listener) has no message: the API's
    # PUBLISH, which carries nothing, is all the broker sees of it.
    rang = f"PUBLISH\n{ready_channel(worker.broker_url)}\n" in broker
    for key in issued_keys.keys[algorithm]:
        assert key.request_id in broker or (rang and key.path != "batch item"), \
            (key.path, "its task message was not seen on the broker")
    assert "PRIVATE KEY" not in broker
    for key in issued_keys.keys[algorithm]:
        assert found_in(leak_forms(key.pem), broker) == [], (key.path, key.certificate_id)


async def test_leaf_key_ciphertext_copied_onto_another_certificate_row_does_not_open_there(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    """The associated data binds each ciphertext to its row: a key sealed for certificate A, written
    into certificate B's row (same project, so the same data key), must not come out as B's key, nor
    as A's. The server's own data is broken, not the caller's request: the right answer is a 5xx
    problem that says the stored key does not decrypt, and hands out no key (not the catch-all 500)."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    first, second = [await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(name))
                     for name in ("first.example.test", "second.example.test")]
    await db.execute("UPDATE certificates SET encrypted_private_key ="
                     " (SELECT encrypted_private_key FROM certificates WHERE id = $1) WHERE id = $2",
                     UUID(first["certificateId"]), UUID(second["certificateId"]))

    for route in ("private-key", "bundle"):
        r = await tenant.admin.get(f"{CERTIFICATES}/{second['certificateId']}/{route}")

        assert r.status >= 500 and r.is_problem(), (route, r.status, r.body)
        assert "PRIVATE KEY" not in str(r.body), route
        assert "private key" in r.body["detail"] and "decrypt" in r.body["detail"], (route, r.body)
    # The original row still opens, with its own key.
    r = await tenant.admin.get(f"{CERTIFICATES}/{first['certificateId']}/private-key")
    assert r.status == 200 and r.body == first["privateKey"], r.body
