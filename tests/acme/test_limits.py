"""ACME limits and hygiene (DESIGN.md 8): caps on open orders and on new orders per account per window
(429 rateLimited + Retry-After), and beat's scheduled clean-up of expired nonces, orders and
authorizations, which also rings again for a validation whose message was lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import josepy as jose
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme.support import AcmeWorld, RawAcme, acme_client, acme_profile, csr_for, problem_type, responder
from tests.api_client import ApiClient
from tests.stack import free_port


@pytest.fixture(scope="module")
def capped(acme_world: AcmeWorld) -> Iterator[tuple[str, str]]:
    """A second API process on the same database with small caps: at most 2 open orders per account and
    4 new orders per hour; and an ACME profile whose orders are ready at once. Yields (api url, profile)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def make() -> str:
        async with aiohttp.ClientSession() as session:
            admin = ApiClient(session, acme_world.api_url, acme_world.admin_token)
            return await acme_profile(admin, acme_world.project_id, acme_world.policy_id, acme_world.issuing_id,
                                      "acme-capped", {"skipEabBinding": True, "skipDnsOwnershipVerification": True})
    profile_id = asyncio.run(make())
    acme_world.stack.start_api(port=port, name="api-capped", env={
        "KMS_PUBLIC_URL": url, "KMS_ACME_MAX_PENDING_ORDERS": "2", "KMS_ACME_NEW_ORDERS_PER_WINDOW": "4",
        "KMS_ACME_NEW_ORDERS_WINDOW_SECONDS": "3600"})
    try:
        yield url, profile_id
    finally:
        acme_world.stack.stop("api-capped")


def _new_order(raw: RawAcme, name: str) -> Any:
    return raw.post(raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})


def _finalize(raw: RawAcme, order: dict[str, Any], name: str) -> None:
    """Finalize a ready order and wait until it is valid."""
    _, csr = csr_for([name])
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    answer = raw.post(order["finalize"], {"csr": jose.encode_b64jose(der)})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while answer.json()["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        answer = raw.post(order["finalize"].removesuffix("/finalize"))
    assert answer.json()["status"] == "valid", answer.text


def test_open_orders_and_new_orders_per_window_are_capped_with_rate_limited(
        acme_world: AcmeWorld, capped: tuple[str, str]) -> None:
    url, profile_id = capped
    raw = RawAcme(acme_world, acme_client(acme_world, profile_id=profile_id, api_url=url))
    first, second = (_new_order(raw, f"cap{i}.example.test") for i in (1, 2))
    assert first.status_code == second.status_code == 201
    over = _new_order(raw, "cap3.example.test")
    assert over.status_code == 429 and problem_type(over) == "rateLimited", over.text
    assert int(over.headers["Retry-After"]) > 0
    assert "not yet final" in over.json()["detail"]
    # Finalized orders are no longer open: two more fit, then the window's cap of 4 new orders is reached.
    for answer, name in ((first, "cap1.example.test"), (second, "cap2.example.test")):
        _finalize(raw, answer.json(), name)
    for i in (4, 5):
        answer = _new_order(raw, f"cap{i}.example.test")
        assert answer.status_code == 201, answer.text
        _finalize(raw, answer.json(), f"cap{i}.example.test")  # no order is open now
    windowed = _new_order(raw, "cap6.example.test")
    assert windowed.status_code == 429 and problem_type(windowed) == "rateLimited", windowed.text
    assert 3000 < int(windowed.headers["Retry-After"]) <= 3600
    # Another account of the same profile has caps of its own.
    other = RawAcme(acme_world, acme_client(acme_world, profile_id=profile_id, api_url=url))
    assert _new_order(other, "cap7.example.test").status_code == 201


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "beat did not clean up in time"
        await asyncio.sleep(0.3)


def test_beat_removes_expired_nonces_orders_and_authorizations(acme_world: AcmeWorld) -> None:
    raw = RawAcme(acme_world, acme_client(acme_world))
    nonce = raw.nonce()
    order = _new_order(raw, "expiring.example.test")
    assert order.status_code == 201
    order_id = order.headers["Location"].rsplit("/", 1)[1]

    async def run() -> None:
        db = await asyncpg.connect(acme_world.stack.database_url)
        try:
            await db.execute("UPDATE acme_nonces SET expires_at = now() - interval '1 second' WHERE nonce = $1", nonce)
            await db.execute("UPDATE acme_orders SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
                             order_id)
            assert await db.fetchval("SELECT count(*) FROM acme_authorizations WHERE order_id = $1::uuid", order_id)

            async def gone() -> bool:
                left = await db.fetchrow(
                    "SELECT (SELECT count(*) FROM acme_nonces WHERE nonce = $1) AS nonces,"
                    " (SELECT count(*) FROM acme_orders WHERE id = $2::uuid) AS orders,"
                    " (SELECT count(*) FROM acme_authorizations WHERE order_id = $2::uuid) AS authorizations,"
                    " (SELECT count(*) FROM acme_challenges c JOIN acme_authorizations a ON a.id = c.authorization_id"
                    "  WHERE a.order_id = $2::uuid) AS challenges", nonce, order_id)
                return not any(left.values())
            await _until(gone)
        finally:
            await db.close()
    asyncio.run(run())
    # The expired nonce is no longer good (it would not have been anyway), and the order is gone for its owner.
    assert problem_type(raw.post(raw.kid or "", nonce=nonce)) == "badNonce"
    assert raw.post(order.headers["Location"]).status_code == 404


def test_a_validation_whose_message_was_lost_is_rung_again_by_beat(acme_world: AcmeWorld) -> None:
    """The challenge row is the truth: one left processing (its task message lost) is validated anyway."""
    raw = RawAcme(acme_world, acme_client(acme_world))
    order = raw.post(raw.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}).json()
    authz = raw.post(order["authorizations"][0]).json()
    [http01] = authz["challenges"]

    async def lose_message() -> None:
        # What the challenge POST does, without its message: processing, started now.
        db = await asyncpg.connect(acme_world.stack.database_url)
        try:
            await db.execute("UPDATE acme_challenges SET status = 'processing', started_at = now(),"
                             " updated_at = now() - interval '1 minute' WHERE token = $1", http01["token"])
        finally:
            await db.close()
    with responder(acme_world) as http01_server:
        key_authorization = f"{http01['token']}.{jose.encode_b64jose(raw.key.thumbprint())}"
        http01_server.answers[http01["token"]] = key_authorization
        asyncio.run(lose_message())
        deadline = time.monotonic() + 20
        while (challenge := raw.post(http01["url"]).json())["status"] == "processing":
            assert time.monotonic() < deadline, "beat never rang again for the stalled validation"
            time.sleep(0.3)
    assert challenge["status"] == "valid", challenge


def test_nonces_are_shared_by_api_processes_and_good_once_across_them(
        acme_world: AcmeWorld, capped: tuple[str, str]) -> None:
    url, profile_id = capped
    raw = RawAcme(acme_world, acme_client(acme_world, profile_id=profile_id, api_url=url))
    main_new_account = f"{acme_world.api_url}/api/v1/cert-manager/acme/profiles/{profile_id}/new-account"
    nonce = raw.http.head(main_new_account.replace("new-account", "new-nonce"), timeout=10).headers["Replay-Nonce"]
    # Issued by the first API process, redeemed at the second ...
    found = raw.post(raw.directory["newAccount"], {"onlyReturnExisting": True}, jwk=True, nonce=nonce)
    assert found.status_code == 200, found.text
    # ... and then no longer good at the first.
    again = raw.post(main_new_account, {"onlyReturnExisting": True}, jwk=True, nonce=nonce)
    assert again.status_code == 400 and problem_type(again) == "badNonce", again.text


def test_beat_settles_an_order_nobody_reads_again(acme_world: AcmeWorld, capped: tuple[str, str]) -> None:
    """An order follows its certificate request when read; one never read again is settled by beat."""
    url, profile_id = capped
    raw = RawAcme(acme_world, acme_client(acme_world, profile_id=profile_id, api_url=url))
    order = _new_order(raw, "unread.example.test").json()
    order_id = order["finalize"].rsplit("/", 2)[1]
    _finalize(raw, order, "unread.example.test")

    async def run() -> None:
        db = await asyncpg.connect(acme_world.stack.database_url)
        try:
            # As it stands when the worker has signed and nobody has looked since.
            await db.execute("UPDATE acme_orders SET status = 'processing', certificate_id = NULL WHERE id = $1::uuid",
                             order_id)

            async def settled() -> bool:
                row = await db.fetchrow("SELECT status, certificate_id FROM acme_orders WHERE id = $1::uuid", order_id)
                return bool(row["status"] == "valid" and row["certificate_id"] is not None)
            await _until(settled)
        finally:
            await db.close()
    asyncio.run(run())
