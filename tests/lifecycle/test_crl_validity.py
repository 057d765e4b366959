"""CRL validity (DESIGN.md 7, invariant 9; issue 10 "must show" 3): thisUpdate < nextUpdate, and a
nextUpdate in the future again once beat runs after a worker was down for longer than the re-sign
margin; CRL numbers that strictly increase; no CRL ever served past its nextUpdate; a revoked
certificate on its CA's CRL until it expires, and off it after (RFC 5280 section 3.3: once it has
appeared on one CRL issued past its notAfter); ``GET /ca/internal/{caId}/crls`` listing the current CRL
only.

The outage and expiry tests run stacks of their own (their settings differ from the session's: the
shortest CRL validity, a backdate of one second), the listing test the session's worker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from cryptography import x509

from tests.api_client import ApiClient, Tenant, open_tenant
from tests.issuance.issuing import issued, server_key_attributes
from tests.lifecycle.revoking import CRL, crl_listing, issue, public_crl, revoke
from tests.pki_setup import CA, Pki, make_pki
from tests.stack import Stack

VALIDITY = 40  # the shortest KMS_CRL_VALIDITY_SECONDS allowed: re-signed once less than 20 s remain
MARGIN = VALIDITY / 2


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def lists(crl: x509.CertificateRevocationList, serial_hex: str) -> bool:
    return crl.get_revoked_certificate_by_serial_number(int(serial_hex, 16)) is not None


def next_update(crl: x509.CertificateRevocationList) -> datetime:
    assert crl.next_update_utc is not None, "a CRL without nextUpdate"
    return crl.next_update_utc


async def stored_crls(db: asyncpg.Connection, ca_id: str) -> list[x509.CertificateRevocationList]:
    """Every CRL the workers signed for the CA, in the order they were stored."""
    rows = await db.fetch("SELECT der FROM certificate_revocation_lists WHERE ca_id = $1::uuid ORDER BY created_at",
                          ca_id)
    return [x509.load_der_x509_crl(r["der"]) for r in rows]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def own_stack(name: str, env: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(name=name, extra_env={"KMS_LOG_LEVEL": "WARNING", **env})
    stack.create_database()
    try:
        stack.start_api()
        yield stack
    finally:
        stack.drop()


# -- GET /ca/internal/{caId}/crls -------------------------------------------------------------------

async def test_the_crls_route_lists_only_the_current_crl_after_several_were_signed(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    serials = []
    for name in ("first.example.test", "second.example.test", "third.example.test"):
        view = await issue(tenant.admin, pki, name)
        assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
        await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
        serials.append(str(view["serialNumber"]))
    signed = [crl_number(c) for c in await stored_crls(db, pki.issuing_id)]
    assert len(signed) >= 1 + len(serials), signed  # the CA's first CRL, then one per revocation here

    r = await tenant.admin.get(f"{CA}/{pki.issuing_id}/crls")

    assert r.status == 200, r.body
    assert [item["id"] for item in r.body] == [pki.issuing_id]
    listed = x509.load_pem_x509_crl(r.body[0]["crl"].encode())
    assert crl_number(listed) == max(signed)
    assert listed == await public_crl(tenant.admin, pki.issuing_id)
    assert all(lists(listed, s) for s in serials)


# -- a revoked certificate stays on the CRL until it expires ---------------------------------------

@pytest.fixture
def expiry_stack() -> Iterator[Stack]:
    # thisUpdate is backdated by KMS_BACKDATE_SECONDS (at most a quarter of the validity): one second here,
    # so a CRL issued past a certificate's notAfter comes a second after it, not a minute.
    yield from own_stack("crlexpiry", {"KMS_BACKDATE_SECONDS": "1"})


async def test_a_revoked_certificate_stays_on_the_crl_until_it_expires_and_leaves_it_after(
        expiry_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = expiry_stack
    stack.start_worker()
    tenant = await open_tenant(stack, session, "expiry")
    pki = await make_pki(tenant.admin, tenant.project_id)
    short = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("short.example.test",
                                                                                        ttl="20s"))
    expires = x509.load_pem_x509_certificate(str(short["certificate"]).encode()).not_valid_after_utc
    longer = [await issue(tenant.admin, pki, f"long{i}.example.test") for i in range(3)]

    async def revoked_and_listed(view: dict[str, object]) -> x509.CertificateRevocationList:
        assert (await revoke(tenant.admin, str(view["certificateId"]))).status == 200
        crl, _ = await crl_listing(tenant.admin, pki.issuing_id, str(view["serialNumber"]))
        return crl

    with_short = await revoked_and_listed(short)
    before_expiry = await revoked_and_listed(longer[0])
    assert next_update(before_expiry) > expires  # a CRL signed before the expiry, still current after it
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 2)
    past_expiry = await revoked_and_listed(longer[1])
    after = await revoked_and_listed(longer[2])

    assert crl_number(with_short) < crl_number(before_expiry) < crl_number(past_expiry) < crl_number(after)
    assert before_expiry.last_update_utc <= expires < past_expiry.last_update_utc
    assert lists(with_short, str(short["serialNumber"])) and lists(before_expiry, str(short["serialNumber"]))
    # RFC 5280 3.3: it appears on one CRL issued beyond its validity period, then leaves.
    assert lists(past_expiry, str(short["serialNumber"]))
    assert not lists(after, str(short["serialNumber"]))
    assert all(lists(after, str(v["serialNumber"])) for v in longer)
    conn = await asyncpg.connect(stack.database_url)
    try:
        every = await stored_crls(conn, pki.issuing_id)
    finally:
        await conn.close()
    numbers = [crl_number(c) for c in every]
    assert numbers == sorted(set(numbers)), numbers
    # Every CRL signed after the revocation and before the expiry lists it.
    assert all(lists(c, str(short["serialNumber"])) for c in every
               if crl_number(c) >= crl_number(with_short) and c.last_update_utc <= expires)


# -- a worker outage longer than the re-sign margin, with the API polled throughout --------------

@dataclass(frozen=True)
class Answer:
    sent_at: datetime
    status: int
    retry_after: str | None
    crl: x509.CertificateRevocationList | None


async def poll_public_crl(client: ApiClient, ca_id: str, answers: list[Answer], stop: asyncio.Event) -> None:
    """What a relying party sees, twice a second until ``stop``: the public DER CRL, or the API's refusal."""
    while not stop.is_set():
        sent_at = datetime.now(UTC)
        async with client.session.get(f"{client.base}{CRL}/{ca_id}/der") as resp:
            body = await resp.read()
            crl = x509.load_der_x509_crl(body) if resp.status == 200 else None
            answers.append(Answer(sent_at, resp.status, resp.headers.get("Retry-After"), crl))
        await asyncio.sleep(0.5)


@pytest.fixture
def outage_stack() -> Iterator[Stack]:
    yield from own_stack("crloutage", {"KMS_CRL_VALIDITY_SECONDS": str(VALIDITY),
                                       "KMS_CRL_REFRESH_INTERVAL_SECONDS": "1"})


async def fresh_stored_crl(db: asyncpg.Connection, ca_id: str, timeout: float) -> x509.CertificateRevocationList:
    deadline = time.monotonic() + timeout
    while True:
        newest = (await stored_crls(db, ca_id))[-1]
        if next_update(newest) - datetime.now(UTC) > timedelta(seconds=MARGIN):
            return newest
        assert time.monotonic() < deadline, f"no fresh CRL for {ca_id} within {timeout} s"
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_after_a_worker_outage_longer_than_the_resign_margin_beat_catches_up_and_no_stale_crl_is_served(
        outage_stack: Stack, session: aiohttp.ClientSession) -> None:
    stack = outage_stack
    stack.start_worker()
    tenant = await open_tenant(stack, session, "outage")
    pki: Pki = await make_pki(tenant.admin, tenant.project_id)
    first = await public_crl(tenant.admin, pki.issuing_id)
    answers: list[Answer] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_public_crl(tenant.admin, pki.issuing_id, answers, stop))
    db = await asyncpg.connect(stack.database_url)
    try:
        stack.stop("worker")
        down_at = time.monotonic()
        # Down past the re-sign margin and past the CRL's nextUpdate, until the API has refused a few times.
        while datetime.now(UTC) < next_update(first) + timedelta(seconds=6):
            await asyncio.sleep(0.5)
        outage = time.monotonic() - down_at
        refused_while_down = [a for a in answers if a.status == 503]

        stack.start_worker()
        stack.start_beat()
        # Nobody asks for the root CA's CRL: only beat's refresh can bring it back.
        root_crl = await fresh_stored_crl(db, pki.root_id, timeout=30)
        issuing_crl = await fresh_stored_crl(db, pki.issuing_id, timeout=30)
        await asyncio.sleep(2)  # a few more answers with the worker back
        stop.set()
        await poller
        served_root = await public_crl(tenant.admin, pki.root_id)
        stored_numbers = {ca: [crl_number(c) for c in await stored_crls(db, ca)]
                          for ca in (pki.root_id, pki.issuing_id)}
    finally:
        stop.set()
        await db.close()

    assert outage > MARGIN, outage
    assert refused_while_down, "the outage never reached the CRL's nextUpdate"
    for answer in answers:
        assert answer.status in (200, 503), answer
        if answer.status == 503:
            assert answer.retry_after is not None and int(answer.retry_after) >= 1, answer
        else:
            assert answer.crl is not None
            assert answer.crl.last_update_utc < next_update(answer.crl), answer
            assert next_update(answer.crl) > answer.sent_at, f"served past its nextUpdate: {answer}"
    served = [a.crl for a in answers if a.crl is not None]
    assert served[-1] == issuing_crl and crl_number(issuing_crl) > crl_number(first)
    served_numbers = [crl_number(c) for c in served]
    assert served_numbers == sorted(served_numbers), served_numbers
    assert all(crl_number(a) < crl_number(b) for a, b in itertools.pairwise(served) if a != b)
    for ca, numbers in stored_numbers.items():
        assert numbers == sorted(set(numbers)), (ca, numbers)
    assert served_root == root_crl
    now = datetime.now(UTC)
    for crl in (root_crl, issuing_crl):
        assert crl.last_update_utc <= now < next_update(crl)
        assert crl.last_update_utc < next_update(crl)
