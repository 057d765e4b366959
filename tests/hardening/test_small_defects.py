"""The smaller defects of issue 8 (item 10), each on the real stack: a saturated pool answers 503 instead
of queueing forever; a policy deleted while a profile naming it is created is a 409, not a 500; every
private key handed out is audited; a notBefore before the issuing CA's is refused by the worker; a CA
disabled mid-batch signs nothing more; a lock timeout, a deadlock or a serialization failure gives the claims
back at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cryptography import x509

from api.certificates.schemas import IssueBody
from shared.config import Settings
from shared.db import policies as policies_db
from shared.db import requests as requests_db
from shared.db.pool import create_pool
from tests.api_client import ApiClient, Tenant
from tests.batches.batching import all_items, csr_item, server_key_item, streamed_items, wait_completed
from tests.batches.batching import submit as submit_batch
from tests.issuance.issuing import CERTIFICATES, outcome, server_key_attributes, submit
from tests.pki_setup import CA, OPEN_POLICY, POLICIES, Pki, make_pki
from tests.stack import Stack
from worker import issuance
from worker.ca_keys import CaKeyCache
from worker.runtime import Runtime

KEY_READ = "certificate.private_key.read"


async def wait_until_blocked(stack: Stack, query_like: str, timeout: float = 10) -> None:
    """Until a backend of the stack's database waits on a lock running a query LIKE ``query_like``. (Its own
    connection: inside a transaction, pg_stat_activity keeps showing the snapshot it first read.)"""
    watcher = await asyncpg.connect(stack.database_url)
    try:
        deadline = time.monotonic() + timeout
        while not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE $1", query_like):
            if time.monotonic() > deadline:
                raise AssertionError(f"no backend blocked on a lock running {query_like!r} after {timeout}s")
            await asyncio.sleep(0.02)
    finally:
        await watcher.close()


# -- a saturated pool answers 503 after a bounded wait ---------------------------------------------

POOL_OF_ONE = "api-pool-of-one"


@pytest.fixture
def pool_of_one_api(worker: Stack) -> Iterator[str]:
    """An API on the session's database with one pooled connection and a half-second acquire timeout."""
    url = worker.start_api(name=POOL_OF_ONE, env={"KMS_DB_POOL_MAX": "1", "KMS_DB_POOL_MIN": "1",
                                                  "KMS_DB_ACQUIRE_TIMEOUT_SECONDS": "0.5"})
    try:
        yield url
    finally:
        worker.stop(POOL_OF_ONE)


async def test_request_that_finds_the_pool_exhausted_is_a_503_problem_with_retry_after_within_seconds(
    tenant: Tenant, pool_of_one_api: str, stack: Stack, db: asyncpg.Connection
) -> None:
    client = ApiClient(tenant.admin.session, pool_of_one_api, tenant.admin.token)
    path = f"{CA}?projectId={tenant.project_id}"
    lock = db.transaction()
    await lock.start()
    # Authentication reads access_tokens: request 1 blocks on this lock holding the API's one connection.
    await db.execute("LOCK TABLE access_tokens IN ACCESS EXCLUSIVE MODE")
    first = asyncio.create_task(client.get(path))
    try:
        await wait_until_blocked(stack, "%FROM access_tokens%")
        started = time.monotonic()
        second = asyncio.create_task(client.get(path))
        done, _ = await asyncio.wait({second}, timeout=5)
        elapsed = time.monotonic() - started
    finally:
        await lock.rollback()
    assert done, "a request waited more than 5 s for a pooled connection (the acquire is unbounded)"
    r = second.result()
    assert r.status == 503 and r.is_problem(), (r.status, r.body)
    assert r.headers["Retry-After"].isdigit(), r.headers
    assert elapsed < 3, f"503 after {elapsed:.1f}s"
    assert (await asyncio.wait_for(first, 30)).status == 200  # the blocked one completes once released


# -- delete_policy races ---------------------------------------------------------------------------


async def spare_policy(tenant: Tenant, name: str = "spare") -> str:
    r = await tenant.admin.post(POLICIES, {"projectId": tenant.project_id, "name": name, **OPEN_POLICY})
    assert r.status == 201, r.body
    policy_id: str = r.body["certificatePolicy"]["id"]
    return policy_id


async def test_policy_deleted_while_a_profile_naming_it_is_being_created_is_a_409_and_the_policy_stays(
    worker: Stack, tenant: Tenant, stack: Stack, db: asyncpg.Connection
) -> None:
    policy_id = await spare_policy(tenant)
    pool = await create_pool(stack.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            creating = conn.transaction()
            await creating.start()
            # A profile naming the policy, not yet committed: the API's DELETE cannot see it, and waits
            # on the row lock its foreign key holds.
            await policies_db.insert_profile(
                conn, project_id=uuid.UUID(tenant.project_id), slug="late", description="", issuer_type="self-signed",
                ca_id=None, certificate_policy_id=uuid.UUID(policy_id), enrollment_type="api", api_config={},
                defaults={})
            deleting = asyncio.create_task(tenant.admin.delete(f"{POLICIES}/{policy_id}"))
            try:
                await wait_until_blocked(stack, "DELETE FROM certificate_policies%")
            finally:
                await creating.commit()
            r = await asyncio.wait_for(deleting, 10)
    finally:
        await pool.close()

    assert r.status == 409 and r.is_problem(), (r.status, r.body)
    assert (await tenant.admin.get(f"{POLICIES}/{policy_id}")).status == 200


async def test_policy_deleted_by_someone_else_at_the_same_moment_is_a_404(
    worker: Stack, tenant: Tenant, stack: Stack, db: asyncpg.Connection
) -> None:
    policy_id = await spare_policy(tenant)
    other = db.transaction()
    await other.start()
    # Another deletion, not yet committed: the API still reads the policy, then waits on its row lock.
    await db.execute("DELETE FROM certificate_policies WHERE id = $1::uuid", policy_id)
    deleting = asyncio.create_task(tenant.admin.delete(f"{POLICIES}/{policy_id}"))
    try:
        await wait_until_blocked(stack, "DELETE FROM certificate_policies%")
    finally:
        await other.commit()
    r = await asyncio.wait_for(deleting, 10)

    assert r.status == 404 and r.is_problem(), (r.status, r.body)


# -- every private key handed out is audited --------------------------------------------------------


async def key_reads(db: asyncpg.Connection, project_id: str) -> list[tuple[str, str]]:
    """(certificate id, actor) of every key-read event of the project, oldest first."""
    rows = await db.fetch("SELECT subject_id, actor FROM audit_events WHERE project_id = $1::uuid AND action = $2"
                          " ORDER BY id", project_id, KEY_READ)
    return [(r["subject_id"], r["actor"]) for r in rows]


async def server_key_certificate(tenant: Tenant, pki: Pki, name: str) -> str:
    """The certificate id of a freshly issued certificate whose key the server generated."""
    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes(name))
    assert r.status == 202, r.body
    view = await outcome(tenant.admin, r.body["certificateRequestId"])
    assert view["status"] == "issued", view
    certificate_id: str = view["certificateId"]
    return certificate_id


async def test_post_with_wait_answering_a_server_key_leaves_one_key_read_event(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("waited.example.test"), wait=10)

    assert r.status == 200 and r.body["certificate"]["privateKey"], (r.status, r.body)
    assert [cert for cert, _ in await key_reads(db, tenant.project_id)] == [r.body["certificate"]["certificateId"]]


async def test_request_view_with_a_server_key_leaves_one_key_read_event(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    r = await submit(tenant.admin, pki.profile_id, attributes=server_key_attributes("viewed.example.test"))
    assert r.status == 202, r.body
    view = await outcome(tenant.admin, r.body["certificateRequestId"])  # the final view carries the key

    assert view["status"] == "issued" and view["privateKey"], view
    assert [cert for cert, _ in await key_reads(db, tenant.project_id)] == [view["certificateId"]]


async def test_get_private_key_leaves_one_key_read_event_naming_the_certificate(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    certificate_id = await server_key_certificate(tenant, pki, "key.example.test")
    before = await key_reads(db, tenant.project_id)

    r = await tenant.admin.get(f"{CERTIFICATES}/{certificate_id}/private-key")

    assert r.status == 200 and "PRIVATE KEY" in r.body, r.body
    assert [cert for cert, _ in (await key_reads(db, tenant.project_id))[len(before):]] == [certificate_id]


async def test_bundle_leaves_a_key_read_event_only_when_it_hands_out_the_key(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    certificate_id = await server_key_certificate(tenant, pki, "bundle.example.test")
    viewer, _ = await tenant.identity("viewer")
    issuer, issuer_identity = await tenant.identity("issuer")
    before = await key_reads(db, tenant.project_id)

    as_viewer = await viewer.get(f"{CERTIFICATES}/{certificate_id}/bundle")
    as_issuer = await issuer.get(f"{CERTIFICATES}/{certificate_id}/bundle")

    assert as_viewer.status == 200 and as_viewer.body["privateKey"] is None, as_viewer.body
    assert as_issuer.status == 200 and as_issuer.body["privateKey"], as_issuer.body
    assert (await key_reads(db, tenant.project_id))[len(before):] == [
        (certificate_id, f"identity:{issuer_identity['identityId']}")]


async def completed_batch_with_server_keys(tenant: Tenant, pki: Pki, db: asyncpg.Connection) -> tuple[str, list[str]]:
    """A completed batch of two server-key items and one CSR item: its id, and its server-key certificates."""
    r = await submit_batch(tenant.admin, pki.profile_id, [server_key_item(0), csr_item(1), server_key_item(2)])
    assert r.status == 202, r.body
    view = await wait_completed(tenant.admin, r.body["batchId"], timeout=30)
    assert view["issued"] == 3, view
    rows = await db.fetch("SELECT c.id FROM certificates c JOIN certificate_requests r ON r.id = c.request_id"
                          " WHERE r.batch_id = $1::uuid AND c.encrypted_private_key IS NOT NULL", r.body["batchId"])
    assert len(rows) == 2
    return r.body["batchId"], sorted(str(row["id"]) for row in rows)


async def test_batch_item_page_leaves_one_key_read_event_per_key_it_returns(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    batch_id, with_keys = await completed_batch_with_server_keys(tenant, pki, db)
    before = await key_reads(db, tenant.project_id)

    items = await all_items(tenant.admin, batch_id)

    assert sorted(i["certificateId"] for i in items if i["privateKey"]) == with_keys
    assert sorted(cert for cert, _ in (await key_reads(db, tenant.project_id))[len(before):]) == with_keys


async def test_batch_item_ndjson_stream_leaves_one_key_read_event_per_key_it_returns(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    batch_id, with_keys = await completed_batch_with_server_keys(tenant, pki, db)
    before = await key_reads(db, tenant.project_id)

    items = await streamed_items(tenant.admin, batch_id)

    assert sorted(i["certificateId"] for i in items if i["privateKey"]) == with_keys
    assert sorted(cert for cert, _ in (await key_reads(db, tenant.project_id))[len(before):]) == with_keys


# -- an explicit notBefore before the issuing CA existed ---------------------------------------------


async def test_explicit_not_before_earlier_than_the_issuing_cas_fails_naming_the_cas_not_before(
    worker: Stack, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    ca_not_before = x509.load_pem_x509_certificate(pki.issuing_pem.encode()).not_valid_before_utc
    now = datetime.now(UTC)
    attributes = server_key_attributes("early.example.test", notBefore=(ca_not_before - timedelta(days=1)).isoformat(),
                                       notAfter=(now + timedelta(days=7)).isoformat())

    r = await submit(tenant.admin, pki.profile_id, attributes=attributes)
    assert r.status == 202, (r.status, r.body)  # the API accepts; the worker, which knows the CA, decides
    view = await outcome(tenant.admin, r.body["certificateRequestId"])

    assert view["status"] == "failed", view
    assert "notBefore" in view["errorMessage"] and ca_not_before.isoformat() in view["errorMessage"], view


# -- a CA disabled while a batch is signed signs nothing more -----------------------------------------


async def certificates_of_ca(db: asyncpg.Connection, ca_id: str) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM certificates WHERE ca_id = $1::uuid", ca_id)
    return n


async def test_no_certificate_of_a_ca_is_stored_after_its_disable_answers_even_mid_batch(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    total = 2000  # enough that it is still being signed when the disable answers
    r = await submit_batch(tenant.admin, pki.profile_id, [server_key_item(i) for i in range(total)])
    assert r.status == 202, r.body
    batch_id = r.body["batchId"]
    deadline = time.monotonic() + 60
    while await certificates_of_ca(db, pki.issuing_id) == 0:  # the batch is being signed
        assert time.monotonic() < deadline, "the batch never started"
        await asyncio.sleep(0.01)

    disabled = await tenant.admin.patch(f"{CA}/{pki.issuing_id}", {"status": "disabled"})
    stored_at_disable = await certificates_of_ca(db, pki.issuing_id)
    open_at_disable = await db.fetchval(
        "SELECT count(*) FROM certificate_requests WHERE batch_id = $1::uuid AND status IN ('pending', 'processing')",
        batch_id)

    assert disabled.status == 200, disabled.body
    assert open_at_disable > 0, "the batch was done before the CA was disabled: this test proved nothing"
    view = await wait_completed(tenant.admin, batch_id, timeout=120)
    assert await certificates_of_ca(db, pki.issuing_id) == stored_at_disable
    assert view["issued"] == stored_at_disable and view["failed"] == total - stored_at_disable, view
    messages = await db.fetch("SELECT DISTINCT error_message FROM certificate_requests"
                              " WHERE batch_id = $1::uuid AND status = 'failed'", batch_id)
    assert messages and all("disabled" in m["error_message"] for m in messages), messages


# -- a lock timeout gives the claims back at once --------------------------------------------------


@pytest.fixture
async def lock_timeout_runtime(stack: Stack) -> AsyncIterator[Runtime]:
    """The worker's runtime, in this process, on the session database, its connections with a 300 ms
    lock_timeout (asyncpg passes unknown DSN parameters to the server as settings)."""
    rt = Runtime(Settings(database_url=f"{stack.database_url}?lock_timeout=300ms",
                          root_key_file=stack.root_key_file, ca_root_key_file=stack.ca_root_key_file))
    pool = await rt.pool()
    try:
        yield rt
    finally:
        await pool.close()


async def unsignalled_request(rt: Runtime, tenant: Tenant, name: str) -> uuid.UUID:
    """A request written as the API writes it, but with no doorbell rung: only the test's calls work on it."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    stored = IssueBody.model_validate({"profileId": pki.profile_id, "attributes": server_key_attributes(name)})
    row = await requests_db.insert_request(
        await rt.pool(), project_id=uuid.UUID(tenant.project_id), profile_id=stored.profile_id, csr_pem=None,
        attributes=stored.stored_attributes(), server_key=True, remove_roots=False, requested_by=None)
    assert row is not None
    return row.id


async def assert_given_back_then_issued(rt: Runtime, cache: CaKeyCache, db: asyncpg.Connection,
                                        request_id: uuid.UUID, error: str) -> None:
    """The failed run gave the claim back at once (pending, no claim token, the error recorded), not at the
    end of its lease; the next run issues."""
    given_back = await db.fetchrow("SELECT status, claim_token, last_error FROM certificate_requests WHERE id = $1",
                                   request_id)
    assert (given_back["status"], given_back["claim_token"]) == ("pending", None), dict(given_back)
    assert error in given_back["last_error"], dict(given_back)

    assert (await issuance.issue_many(rt, cache, [request_id]))["issued"] == 1
    assert await db.fetchval("SELECT status FROM certificate_requests WHERE id = $1", request_id) == "issued"


async def test_a_lock_timeout_while_signing_gives_the_claim_back_at_once_and_the_retry_issues(
    worker: Stack, tenant: Tenant, lock_timeout_runtime: Runtime, db: asyncpg.Connection
) -> None:
    rt = lock_timeout_runtime
    request_id = await unsignalled_request(rt, tenant, "locked.example.test")
    cache = CaKeyCache(rt.ca_keyring, rt.settings.ca_key_cache_seconds)

    holding = db.transaction()
    await holding.start()
    try:
        await db.execute("LOCK TABLE certificate_authorities IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await issuance.issue_many(rt, cache, [request_id])
    finally:
        await holding.rollback()

    await assert_given_back_then_issued(rt, cache, db, request_id, "LockNotAvailableError")


@pytest.mark.parametrize(("sqlstate", "error"), [("40P01", asyncpg.DeadlockDetectedError),
                                                 ("40001", asyncpg.SerializationError)],
                         ids=["deadlock", "serialization-failure"])
async def test_a_deadlock_or_serialization_failure_while_storing_gives_the_claim_back_at_once_and_the_retry_issues(
    worker: Stack, tenant: Tenant, lock_timeout_runtime: Runtime, db: asyncpg.Connection, sqlstate: str,
    error: type[asyncpg.PostgresError]
) -> None:
    rt = lock_timeout_runtime
    request_id = await unsignalled_request(rt, tenant, f"{error.__name__.lower()}.example.test")
    cache = CaKeyCache(rt.ca_keyring, rt.settings.ca_key_cache_seconds)
    # PostgreSQL raises the error itself, with its real SQLSTATE, in the statement that stores the
    # certificate: the signing transaction rolls back as it does when the server picks it as a deadlock
    # victim or fails its serialization.
    trigger = f"kms_test_fail_{request_id.hex}"
    await db.execute(f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     f" RAISE EXCEPTION 'injected by the test' USING ERRCODE = '{sqlstate}'; END $$")
    await db.execute(f"CREATE TRIGGER {trigger} BEFORE INSERT ON certificates FOR EACH ROW"
                     f" WHEN (NEW.request_id = '{request_id}') EXECUTE FUNCTION {trigger}()")
    try:
        with pytest.raises(error):
            await issuance.issue_many(rt, cache, [request_id])
    finally:
        await db.execute(f"DROP FUNCTION {trigger}() CASCADE")

    await assert_given_back_then_issued(rt, cache, db, request_id, error.__name__)
