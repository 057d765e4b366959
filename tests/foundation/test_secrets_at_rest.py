"""Client secrets and tokens are never stored or logged in plaintext."""

from __future__ import annotations

import subprocess

from tests.api_client import Tenant
from tests.stack import Stack


def dump(stack: Stack) -> str:
    out = subprocess.run(["pg_dump", "--data-only", "--inserts", stack.database_url],
                         capture_output=True, check=True, timeout=60)
    return out.stdout.decode(errors="replace")


async def test_database_dump_holds_no_plaintext_client_secret_or_token(stack: Stack, tenant: Tenant) -> None:
    issuer, created = await tenant.identity("issuer")
    secrets_and_tokens = [tenant.client_secret, tenant.admin.token, created["clientSecret"], issuer.token]
    text = dump(stack)
    assert tenant.client_id in text  # the dump really holds this project's rows
    for value in secrets_and_tokens:
        assert value
        assert value not in text
        # Not even the random part without its prefix.
        assert value.split("_", 2)[-1] not in text


async def test_logs_hold_no_secret_or_token(stack: Stack, tenant: Tenant) -> None:
    issuer, created = await tenant.identity("issuer")
    await tenant.admin.post("/api/v1/auth/universal-auth/login",
                            {"clientId": created["clientId"], "clientSecret": "wrong" + created["clientSecret"]})
    logs = stack.logs()
    assert logs  # the API did log
    for value in (tenant.client_secret, tenant.admin.token, created["clientSecret"], issuer.token):
        assert value and value not in logs
