"""A certificate's chain is stored once (issue 11, migration 0020): certificates issued from one CA share
one certificate_chains row and keep only its digest, every read still shows the whole chain, and a row
stored before the migration (its chain inline) reads as it did."""

from __future__ import annotations

import asyncpg

from tests.api_client import Tenant
from tests.issuance.issuing import CERTIFICATES, issued, server_key_attributes
from tests.pki_setup import make_pki
from tests.stack import Stack


async def test_certificates_of_one_ca_share_one_stored_chain_and_still_show_it(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    views = [await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes(f"chain{i}.example.test"))
             for i in range(3)]
    rows = await db.fetch("SELECT chain_pem, issuing_ca_pem, chain_digest FROM certificates WHERE id = ANY($1::uuid[])",
                          [v["certificateId"] for v in views])
    assert all(r["chain_pem"] is None and r["issuing_ca_pem"] is None for r in rows)
    assert len({r["chain_digest"] for r in rows}) == 1
    chain = await db.fetchrow("SELECT chain, issuing_ca FROM certificate_chains WHERE digest = $1",
                              rows[0]["chain_digest"])
    assert chain["issuing_ca"].strip() == pki.issuing_pem.strip()
    for view in views:
        r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}/bundle")
        assert r.status == 200, r.body
        assert r.body["certificateChain"] == chain["chain"] == view["certificateChain"]
        assert pki.issuing_pem.strip() in r.body["certificateChain"]


async def test_a_certificate_stored_with_its_chain_inline_reads_as_before(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)
    view = await issued(tenant.admin, pki.profile_id, attributes=server_key_attributes("inline.example.test"))
    # As a row written before migration 0020 looks: the chain in the row, no digest.
    await db.execute("UPDATE certificates c SET chain_pem = ch.chain, issuing_ca_pem = ch.issuing_ca,"
                     " chain_digest = NULL FROM certificate_chains ch"
                     " WHERE ch.digest = c.chain_digest AND c.id = $1::uuid", view["certificateId"])
    r = await tenant.admin.get(f"{CERTIFICATES}/{view['certificateId']}/bundle")
    assert r.status == 200
    assert r.body["certificateChain"] == view["certificateChain"]
