"""External CAs behave as internal ones for their users (issue 13): the CLI, http-01 answered by the
service's own route, the policy checked before anything goes upstream, renewal by hand and by the server,
the CA routes' conventions (tenancy 404, upstream error body), and the account's secrets out of the API's
reach at rest."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
from cryptography import x509

from tests.api_client import Tenant, assert_problem
from tests.external.conftest import World
from tests.external.test_issuance import verify_to_pebble_root
from tests.external.upstream import ZONE
from tests.external.world import (
    ACME_CA,
    final,
    make_acme_pki,
    pebble_new_orders,
    server_key_body,
    stored_orders,
    submit,
    until,
)

ROOT = Path(__file__).resolve().parents[2]


async def test_http01_is_answered_by_the_services_own_route_and_the_answer_is_removed_once_issued(
        world: World, ext_tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="http", dns01=False)
    answer = await submit(ext_tenant.admin, server_key_body(pki.profile_id, f"http.{ZONE}"), wait=30)
    assert answer["status"] == "issued", answer
    verify_to_pebble_root(world, answer["certificate"]["certificate"], answer["certificate"]["certificateChain"],
                          tmp_path)
    # pebble fetched the key authorization from the API (its own validation request is in the API's log).
    assert "/.well-known/acme-challenge/" in world.stack.log_path("api").read_text()
    conn = await asyncpg.connect(world.stack.database_url)
    try:
        left = await conn.fetchval("SELECT count(*) FROM acme_http01_answers WHERE request_id = $1::uuid",
                                   answer["certificateRequestId"])
    finally:
        await conn.close()
    assert left == 0


async def test_the_cli_requests_a_certificate_of_an_external_ca_as_of_an_internal_one(
        world: World, ext_tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="cli")
    env = {**world.stack.env, "KMS_CONFIG_DIR": str(tmp_path / "config"), "KMS_URL": world.stack.api_url,
           "KMS_CLIENT_ID": ext_tenant.client_id, "KMS_CLIENT_SECRET": ext_tenant.client_secret}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    assert cli("login").returncode == 0
    out_dir = tmp_path / "out"
    out = await asyncio.to_thread(cli, "cert", "request", "--profile", pki.profile_id, "--cn", f"cli.{ZONE}",
                                  "--san", f"dns:cli.{ZONE}", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert "status: issued" in out.stdout
    verify_to_pebble_root(world, (out_dir / "cert.pem").read_text(), (out_dir / "chain.pem").read_text(), tmp_path)
    assert (out_dir / "key.pem").exists()


async def test_a_name_the_policy_denies_is_refused_before_anything_is_sent_upstream(
        world: World, ext_tenant: Tenant) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="deny")
    before = pebble_new_orders(world.upstream.pebble)
    r = await ext_tenant.admin.post("/api/v1/cert-manager/certificates",
                                    server_key_body(pki.profile_id, f"forbidden.{ZONE}"))
    assert_problem(r, 400)
    assert f"forbidden.{ZONE}" in r.body["message"]
    await asyncio.sleep(1)
    assert pebble_new_orders(world.upstream.pebble) == before
    assert await stored_orders(world.stack.database_url, pki.ca_id) == []


async def test_renewal_by_hand_obtains_a_new_certificate_from_the_external_ca_and_links_both(
        world: World, ext_tenant: Tenant, tmp_path: Path) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="renew")
    first = await submit(ext_tenant.admin, server_key_body(pki.profile_id, f"renew.{ZONE}"), wait=30)
    assert first["status"] == "issued", first
    old_id = first["certificate"]["certificateId"]
    r = await ext_tenant.admin.post(f"/api/v1/cert-manager/certificates/{old_id}/renew")
    assert r.status == 202 and r.body["status"] == "pending", r.body
    renewed = await final(ext_tenant.admin, r.body["certificateRequestId"])
    assert renewed["status"] == "issued", renewed
    assert renewed["certificateId"] != old_id
    verify_to_pebble_root(world, renewed["certificate"], renewed["certificateChain"], tmp_path)
    old = (await ext_tenant.admin.get(f"/api/v1/cert-manager/certificates/{old_id}")).body["certificate"]
    assert old["status"] == "active" and old["renewedByCertificateId"] == renewed["certificateId"]
    new_cert = x509.load_pem_x509_certificate(renewed["certificate"].encode())
    assert new_cert.public_key() != x509.load_pem_x509_certificate(
        first["certificate"]["certificate"].encode()).public_key()
    assert len(await stored_orders(world.stack.database_url, pki.ca_id)) == 2


async def test_server_driven_renewal_renews_an_external_certificate_through_its_external_ca(
        world: World, ext_tenant: Tenant) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="auto",
                              auto_renew={"autoRenew": True, "renewBeforeDays": 30})
    first = await submit(ext_tenant.admin, server_key_body(pki.profile_id, f"auto.{ZONE}"), wait=30)
    assert first["status"] == "issued", first
    old_id = first["certificate"]["certificateId"]
    conn = await asyncpg.connect(world.stack.database_url)
    try:
        # Bring its due date to now (pebble's certificates last years); beat's scan runs every second here.
        await conn.execute("UPDATE certificates SET renewal_due_at = now() - interval '1 second'"
                           " WHERE id = $1::uuid", old_id)

        async def renewed() -> bool:
            return bool(await conn.fetchval("SELECT renewed_by_id IS NOT NULL FROM certificates WHERE id = $1::uuid",
                                            old_id))

        await until(renewed, timeout=60, interval=0.5)
        kind = await conn.fetchval("SELECT r.issuer_kind FROM certificates c JOIN certificate_requests r"
                                   " ON r.id = c.request_id WHERE c.renewed_from_id = $1::uuid", old_id)
    finally:
        await conn.close()
    assert kind == "external"
    assert len(await stored_orders(world.stack.database_url, pki.ca_id)) == 2


async def test_an_acme_ca_of_another_project_is_404_and_bad_configurations_are_422(
        world: World, ext_tenant: Tenant, session: object) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="ten")
    from tests.api_client import open_tenant
    other = await open_tenant(world.stack, session, "ext-other")  # type: ignore[arg-type]
    for method, path in (("GET", f"{ACME_CA}/{pki.ca_id}"), ("PATCH", f"{ACME_CA}/{pki.ca_id}"),
                         ("DELETE", f"{ACME_CA}/{pki.ca_id}")):
        r = await other.admin.request(method, path, json_body={"status": "disabled"} if method == "PATCH" else None)
        assert_problem(r, 404)
    # The internal CA routes do not show an ACME CA either.
    assert_problem(await ext_tenant.admin.get(f"/api/v1/cert-manager/ca/internal/{pki.ca_id}"), 404)
    base = {"projectId": ext_tenant.project_id, "name": "bad-acme"}
    for configuration in ({"directoryUrl": "http://plain.example/dir", "accountEmail": "a@b.test"},
                          {"directoryUrl": "https://x.example/dir", "accountEmail": "a@b.test", "eabKid": "k"},
                          {"directoryUrl": "https://x.example/dir", "accountEmail": "a@b.test", "caBundle": "nope"},
                          {"directoryUrl": "https://x.example/dir", "accountEmail": "a@b.test",
                           "dnsProviderConfig": {"provider": "route66"}}):
        r = await ext_tenant.admin.post(ACME_CA, {**base, "configuration": configuration})
        assert_problem(r, 422)
    listed = await ext_tenant.admin.get(ACME_CA, params={"projectId": ext_tenant.project_id})
    assert listed.status == 200 and [c["id"] for c in listed.body] == [pki.ca_id]
    assert listed.body[0]["configuration"]["accountUrl"].startswith("https://127.0.0.1:")
    assert "tsigSecret" not in str(listed.body)


async def test_the_account_key_and_secrets_are_sealed_under_the_ca_root_key(world: World, ext_tenant: Tenant) -> None:
    pki = await make_acme_pki(ext_tenant.admin, ext_tenant.project_id, world.upstream, slug="seal")
    secret = world.upstream.dns.tsig_secret
    conn = await asyncpg.connect(world.stack.database_url)
    try:
        row = await conn.fetchrow("SELECT encrypted_account_key, encrypted_secrets, secrets_sealed_by, dns_provider"
                                  " FROM upstream_acme_accounts WHERE ca_id = $1::uuid", pki.ca_id)
        dump = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM upstream_acme_accounts t")
    finally:
        await conn.close()
    assert row["encrypted_account_key"] is not None and row["secrets_sealed_by"] == "ca-root"
    assert secret not in dump and "tsigSecret" not in str(row["dns_provider"])
    assert b"PRIVATE KEY" not in row["encrypted_account_key"]
