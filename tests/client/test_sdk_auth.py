"""The client SDK's login, token renewal and project lookup against the real stack (DESIGN.md 5.2)."""

from __future__ import annotations

import asyncpg
import pytest

from client.sdk import ApiError, KmsClient
from shared.config import Settings
from shared.secrets.credentials import token_digest
from tests.api_client import Tenant
from tests.stack import Stack


async def test_sdk_login_token_reads_every_login_field(worker: Stack, tenant: Tenant) -> None:
    async with KmsClient(worker.api_url) as kms:
        token = await kms.login_token(tenant.client_id, tenant.client_secret)
    assert token.access_token and kms.token == token.access_token
    assert token.expires_in == Settings().token_ttl_seconds
    assert token.access_token_max_ttl == Settings().token_max_ttl_seconds and token.token_type == "Bearer"


async def test_sdk_renew_token_extends_the_current_token_and_keeps_its_max_ttl(
        worker: Stack, tenant: Tenant, db: asyncpg.Connection) -> None:
    async with KmsClient(worker.api_url) as kms:
        first = await kms.login_token(tenant.client_id, tenant.client_secret)
        await db.execute("UPDATE access_tokens SET expires_at = now() + interval '40 seconds'"
                         " WHERE token_digest = $1", token_digest(first.access_token))
        renewed = await kms.renew_token()
        assert renewed.access_token == kms.token == first.access_token
        assert renewed.expires_in > 40 and renewed.access_token_max_ttl == first.access_token_max_ttl


async def test_sdk_project_by_slug_answers_the_callers_project(worker: Stack, tenant: Tenant,
                                                               db: asyncpg.Connection) -> None:
    slug = await db.fetchval("SELECT slug FROM projects WHERE id = $1::uuid", tenant.project_id)
    async with KmsClient(worker.api_url) as kms:
        await kms.login(tenant.client_id, tenant.client_secret)
        assert await kms.project_by_slug(slug) == {"id": tenant.project_id, "name": "alpha", "slug": slug}
        with pytest.raises(ApiError) as err:
            await kms.project_by_slug("no-such-project/../x")
    assert err.value.status == 404


async def test_sdk_renew_token_without_a_login_is_refused_before_any_call(worker: Stack) -> None:
    async with KmsClient(worker.api_url) as kms:
        with pytest.raises(ValueError, match="not logged in"):
            await kms.renew_token()
