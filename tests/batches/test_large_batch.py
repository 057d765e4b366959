"""A full-size batch (10,000 items, the limit) as a fleet roll-out would send it: half CSRs, half keys the
server generates, and 1% of the items wrong in a dozen different ways. The wrong ones fail alone, each
with its reason; the rest are issued, exactly once, by certificates that chain to the project's root."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api_client import ApiClient, Tenant
from tests.batches.batching import (
    HOSTILE,
    all_items,
    by_status,
    certificates_of_batch,
    hostile_item,
    name_of,
    reason_words,
    streamed_items,
    submit,
    valid_item,
    wait_completed,
    with_unknown_fields,
)
from tests.pki_setup import REQUESTS, Pki, make_pki
from tests.stack import Stack

TOTAL = 10_000
INVALID = 100
SAMPLE = 100


def spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


async def openssl_verify_each(tmp_path: Path, pki: Pki, leaves: dict[int, str]) -> dict[int, str]:
    """``openssl verify -CAfile root.pem -untrusted chain.pem`` over every leaf (one process; openssl
    checks and reports each file on its own). Returns the verdict line per item index."""
    root, chain = tmp_path / "root.pem", tmp_path / "chain.pem"
    root.write_text(pki.root_pem)
    chain.write_text(pki.issuing_pem)
    files = {}
    for index, pem in leaves.items():
        files[index] = tmp_path / f"leaf-{index}.pem"
        files[index].write_text(pem)
    proc = await asyncio.create_subprocess_exec(
        "openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain), *map(str, files.values()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    return {index: next((ln for ln in lines if ln.startswith(f"{path}:")), f"{path}: no verdict\n{out.decode()}")
            for index, path in files.items()}


async def request_views(client: ApiClient, request_ids: list[str]) -> list[dict[str, Any]]:
    """``GET .../certificate-requests/{id}`` for every id, 32 at a time."""
    gate = asyncio.Semaphore(32)

    async def one(request_id: str) -> dict[str, Any]:
        async with gate:
            r = await client.get(f"{REQUESTS}/{request_id}")
        assert r.status == 200, (request_id, r.status, r.body)
        view: dict[str, Any] = r.body
        return view

    return list(await asyncio.gather(*(one(rid) for rid in request_ids)))


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
async def test_ten_thousand_items_with_one_percent_invalid_issue_9900_and_fail_100_each_with_its_reason(
    worker: Stack, tenant: Tenant, db: asyncpg.Connection, tmp_path: Path
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    rng = random.Random(20_000)
    kinds = list(HOSTILE)
    invalid = {index: kinds[n % len(kinds)] for n, index in enumerate(sorted(rng.sample(range(TOTAL), INVALID)))}
    # Some valid items carry fields this version does not know; those are ignored, and the items issued.
    tolerated = {i for i in range(0, TOTAL, 97) if i not in invalid}
    items = [hostile_item(invalid[i], i) if i in invalid
             else with_unknown_fields(valid_item(i)) if i in tolerated else valid_item(i) for i in range(TOTAL)]

    r = await submit(tenant.admin, pki.profile_id, items)

    assert r.status == 202, (r.status, r.body)
    batch_id = r.body["batchId"]
    assert r.body["total"] == TOTAL
    # Everything wrong here is visible to the API: those items fail at once, the rest is enqueued.
    assert r.body["failedAtSubmission"] == INVALID
    assert r.headers["Location"].endswith(f"/certificate-batches/{batch_id}")

    batch = await wait_completed(tenant.admin, batch_id, timeout=120)
    assert (batch["total"], batch["issued"], batch["failed"], batch["pending"]) == (TOTAL, TOTAL - INVALID, INVALID, 0)
    assert batch["completedAt"] is not None and batch["completedAt"] >= batch["createdAt"]

    # The counters agree with the items, read page by page and as one stream.
    paged = await all_items(tenant.admin, batch_id, limit=1000)
    streamed = await streamed_items(tenant.admin, batch_id)
    assert [i["index"] for i in paged] == list(range(TOTAL))
    assert by_status(paged) == by_status(streamed) == {"issued": TOTAL - INVALID, "failed": INVALID}
    assert [(i["index"], i["status"], i["certificateRequestId"], i["certificateId"]) for i in streamed] == \
        [(i["index"], i["status"], i["certificateRequestId"], i["certificateId"]) for i in paged]

    # Exactly the invalid items failed, each saying why.
    failed = {i["index"]: i for i in paged if i["status"] == "failed"}
    assert set(failed) == set(invalid)
    unexplained = {index: (invalid[index], item["errorMessage"]) for index, item in failed.items()
                   if not item["errorMessage"]
                   or not all(w in item["errorMessage"] for w in reason_words(invalid[index]))}
    assert not unexplained, unexplained
    assert all(item["certificate"] is None and item["certificateId"] is None for item in failed.values())

    issued = [i for i in paged if i["status"] == "issued"]
    assert tolerated <= {i["index"] for i in issued}
    assert all(i["certificate"] and i["certificateId"] and i["serialNumber"] and i["errorMessage"] is None
               for i in issued)
    assert len({i["serialNumber"] for i in issued}) == TOTAL - INVALID
    # A key is returned exactly for the items whose key the server generated (odd indexes).
    assert {i["index"] for i in issued if i["privateKey"]} == {i["index"] for i in issued if i["index"] % 2}

    # A sample of the issued certificates chains to the root, names its own item, and carries the key
    # of its CSR or the EC P-256 key the server generated and handed back.
    sample = {i["index"]: i for i in random.Random(1).sample(issued, SAMPLE)}
    verdicts = await openssl_verify_each(tmp_path, pki, {index: i["certificate"] for index, i in sample.items()})
    assert all(line.endswith(": OK") for line in verdicts.values()), verdicts
    for index, item in sample.items():
        cert = x509.load_pem_x509_certificate(item["certificate"].encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name_of(index)
        if index % 2 == 0:
            requested = x509.load_pem_x509_csr(items[index]["csr"].encode()).public_key()
            assert spki(cert.public_key()) == spki(requested)
        else:
            key = serialization.load_pem_private_key(item["privateKey"].encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
            assert spki(cert.public_key()) == spki(key.public_key())

    # Every item is an ordinary certificate request, readable on the single-request API.
    views = await request_views(tenant.admin, [i["certificateRequestId"] for i in paged])
    assert [(v["certificateRequestId"], v["status"], v["certificateId"]) for v in views] == \
        [(i["certificateRequestId"], i["status"], i["certificateId"]) for i in paged]
    assert all(v["errorMessage"] == failed[i["index"]]["errorMessage"]
               for v, i in zip(views, paged, strict=True) if i["status"] == "failed")

    # And the database holds one certificate per issued item, none for a failed one.
    assert await certificates_of_batch(db, batch_id) == (TOTAL - INVALID, TOTAL - INVALID, 0)
