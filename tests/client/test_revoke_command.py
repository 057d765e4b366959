"""``kms-pki cert revoke ID --reason R`` as a user runs it, against the real stack."""

from __future__ import annotations

import json

from tests.api_client import Tenant
from tests.client.conftest import Cli
from tests.issuance.issuing import CERTIFICATES, issued, server_key_attributes
from tests.pki_setup import Pki


async def test_cert_revoke_revokes_with_the_reason_and_prints_the_serial(cli: Cli, logged_in: Tenant,
                                                                         pki: Pki) -> None:
    view = await issued(logged_in.admin, pki.profile_id, attributes=server_key_attributes("cli.example.test"))
    out = cli("cert", "revoke", view["certificateId"], "--reason", "key_compromise")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["serialNumber"] == view["serialNumber"]
    meta = (await logged_in.admin.get(f"{CERTIFICATES}/{view['certificateId']}")).body["certificate"]
    assert (meta["status"], meta["revocationReason"]) == ("revoked", "KEY_COMPROMISE")


async def test_cert_revoke_twice_fails_readably(cli: Cli, logged_in: Tenant, pki: Pki) -> None:
    view = await issued(logged_in.admin, pki.profile_id, attributes=server_key_attributes("cli2.example.test"))
    assert cli("cert", "revoke", view["certificateId"]).returncode == 0
    again = cli("cert", "revoke", view["certificateId"])
    assert again.returncode != 0 and "already revoked" in again.stderr, again.stderr
