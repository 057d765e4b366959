"""100 concurrent ACME orders, each the whole certbot sequence (new-order, http-01, finalize, download)
with the acme library, complete with exactly one certificate each (issue 12 "must show" 4)."""

from __future__ import annotations

import asyncio
import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from acme import challenges, client
from cryptography import x509

from tests.acme.support import AcmeWorld, Http01Responder, acme_client, csr_for, responder

ORDERS = 100
ACCOUNTS = 10


def _one_order(acme: client.ClientV2, http01: Http01Responder, index: int) -> tuple[str, int]:
    """(order URL, leaf serial) of one complete order."""
    _, csr = csr_for([f"fleet-{index}.example.test"])
    order = acme.new_order(csr)
    [authz] = order.authorizations
    [chall] = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
    response, validation = chall.response_and_validation(acme.net.key)
    http01.answers[chall.chall.encode("token")] = validation
    acme.answer_challenge(chall, response)
    done = acme.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=240))
    leaf = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    return order.uri, leaf.serial_number


@pytest.mark.slow
def test_a_hundred_concurrent_orders_each_get_exactly_one_certificate(acme_world: AcmeWorld) -> None:
    clients = [acme_client(acme_world) for _ in range(ACCOUNTS)]
    with responder(acme_world) as http01, ThreadPoolExecutor(max_workers=ORDERS) as pool:
        started = time.monotonic()
        futures = [pool.submit(_one_order, clients[i % ACCOUNTS], http01, i) for i in range(ORDERS)]
        results = [f.result(timeout=300) for f in futures]
        elapsed = time.monotonic() - started
    print(f"\n{ORDERS} concurrent ACME orders ({ACCOUNTS} accounts, http-01, finalize, download): "
          f"{elapsed:.1f} s, {ORDERS / elapsed:.1f} orders/s")
    assert len({url for url, _ in results}) == ORDERS
    assert len({serial for _, serial in results}) == ORDERS

    async def counts() -> asyncpg.Record:
        db = await asyncpg.connect(acme_world.stack.database_url)
        try:
            ids = [url.rsplit("/", 1)[1] for url, _ in results]
            return await db.fetchrow(
                "SELECT count(DISTINCT o.request_id) AS requests, count(c.id) AS certificates,"
                " count(DISTINCT c.request_id) AS certified_requests,"
                " count(*) FILTER (WHERE o.status = 'valid') AS valid"
                " FROM acme_orders o LEFT JOIN certificates c ON c.request_id = o.request_id"
                " WHERE o.id = ANY($1::uuid[])", ids)
        finally:
            await db.close()
    row = asyncio.run(counts())
    # One request per order, one certificate per request, every order valid.
    assert dict(row) == {"requests": ORDERS, "certificates": ORDERS, "certified_requests": ORDERS, "valid": ORDERS}
