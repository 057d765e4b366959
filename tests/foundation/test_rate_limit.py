"""Rate limits: per source on login and the other public routes, per client id on failed logins, per
identity on authenticated routes; 429 + Retry-After + a problem body; shared through Redis by every API
process; login work never starves other requests.

The limits here are tight, so they run on extra API processes with their own Redis database for the
buckets: the session's main API keeps the production defaults that the rest of the suite runs under.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import statistics
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.api_client import ApiClient, Reply, Tenant
from tests.pki_setup import make_pki
from tests.proxy import CuttableProxy
from tests.stack import REDIS_BASE, Stack, _lease_redis_db, _release_redis_db

LOGIN = "/api/v1/auth/universal-auth/login"
BATCHES = "/api/v1/cert-manager/certificate-batches"
LOGIN_BURST = 4
LOGIN_PER_MINUTE = 30  # one token every 2 s
FAILURE_BURST = 3
IDENTITY_BURST = 20
IDENTITY_PER_SECOND = 10
SOURCE_BURST = 5
RELYING_PARTY_BURST = 12
TIGHT = {
    "KMS_RATE_LIMIT_LOGIN_PER_MINUTE": str(LOGIN_PER_MINUTE),
    "KMS_RATE_LIMIT_LOGIN_BURST": str(LOGIN_BURST),
    "KMS_RATE_LIMIT_LOGIN_FAILURES_PER_MINUTE": "6",
    "KMS_RATE_LIMIT_LOGIN_FAILURES_BURST": str(FAILURE_BURST),
    "KMS_RATE_LIMIT_PER_IDENTITY_PER_SECOND": str(IDENTITY_PER_SECOND),
    "KMS_RATE_LIMIT_PER_IDENTITY_BURST": str(IDENTITY_BURST),
    "KMS_RATE_LIMIT_PER_SOURCE_PER_SECOND": "1",
    "KMS_RATE_LIMIT_PER_SOURCE_BURST": str(SOURCE_BURST),
    "KMS_RATE_LIMIT_RELYING_PARTY_PER_SECOND": "1",
    "KMS_RATE_LIMIT_RELYING_PARTY_BURST": str(RELYING_PARTY_BURST),
}


@dataclass
class Limited:
    trusting: ApiClient  # trusts 127.0.0.1 as a proxy: X-Forwarded-For names the source
    plain: ApiClient  # trusts nobody: the source is the peer address
    buckets: redis.Redis  # where both keep their buckets


@dataclass
class LimitedApis:
    trusting_url: str
    plain_url: str
    redis_url: str


@pytest.fixture(scope="module")
def limited_apis(stack: Stack, api_url: str) -> Iterator[LimitedApis]:
    owner = f"{stack.db_name}-rate-limits"
    n = _lease_redis_db(owner)
    redis_url = f"{REDIS_BASE}/{n}"
    env = {**TIGHT, "KMS_RATE_LIMIT_REDIS_URL": redis_url}
    try:
        trusting = stack.start_api(name="api-rl-trusting", env={**env, "KMS_TRUSTED_PROXIES": "127.0.0.1"})
        plain = stack.start_api(name="api-rl-plain", env=env)
        yield LimitedApis(trusting, plain, redis_url)
    finally:
        stack.stop("api-rl-trusting")
        stack.stop("api-rl-plain")
        redis.Redis.from_url(redis_url).flushdb()
        _release_redis_db(n, owner)


@pytest.fixture
def limited(limited_apis: LimitedApis, http: ApiClient) -> Iterator[Limited]:
    """Both tight APIs, with every bucket full again (each test starts from a quiet source)."""
    with redis.Redis.from_url(limited_apis.redis_url) as buckets:
        buckets.flushdb()
        yield Limited(ApiClient(http.session, limited_apis.trusting_url),
                      ApiClient(http.session, limited_apis.plain_url), buckets)


async def _login(client: ApiClient, client_id: str, secret: str, source: str | None = None) -> Reply:
    headers = {"X-Forwarded-For": source} if source else None
    return await client.with_token(None).post(LOGIN, {"clientId": client_id, "clientSecret": secret},
                                              headers=headers)


def _assert_rate_limited(r: Reply) -> int:
    assert r.status == 429, (r.status, r.body)
    assert r.is_problem(), r.body
    assert r.body["message"] and r.body["detail"], r.body
    retry_after = int(r.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def _identities(tenant: Tenant) -> str:
    return f"/api/v1/projects/{tenant.project_id}/identities"


def _item(n: int) -> dict[str, Any]:
    name = f"flood-{n}.example.test"
    return {"attributes": {"commonName": name, "altNames": [{"type": "dns_name", "value": name}]}}


async def test_login_flood_beyond_the_limit_is_429_with_retry_after_and_a_problem_body(
    limited: Limited, tenant: Tenant
) -> None:
    replies = [await _login(limited.plain, tenant.client_id, tenant.client_secret) for _ in range(LOGIN_BURST + 4)]

    assert [r.status for r in replies[:LOGIN_BURST]] == [200] * LOGIN_BURST
    assert sum(r.status == 200 for r in replies) <= LOGIN_BURST + 1  # one token may refill meanwhile
    retry_after = _assert_rate_limited(replies[-1])
    assert retry_after <= 60 / LOGIN_PER_MINUTE
    assert "login" in replies[-1].body["message"]


async def test_two_api_processes_share_one_login_limit(limited: Limited, tenant: Tenant) -> None:
    apis = itertools.cycle([limited.plain, limited.trusting])
    replies = [(api, await _login(api, tenant.client_id, tenant.client_secret))
               for api in itertools.islice(apis, 2 * LOGIN_BURST)]

    # Apart, each process would let LOGIN_BURST through: 2 * LOGIN_BURST in all.
    assert sum(r.status == 200 for _, r in replies) <= LOGIN_BURST + 1, [r.status for _, r in replies]
    for api in (limited.plain, limited.trusting):
        refused = [r for a, r in replies if a is api and r.status == 429]
        assert refused, f"{api.base} never refused"
        _assert_rate_limited(refused[0])
    # One bucket in Redis, which forgets it once it would be full again.
    assert limited.buckets.keys("kms:rl:login:*") == [b"kms:rl:login:127.0.0.1"]
    assert 0 < limited.buckets.pttl("kms:rl:login:127.0.0.1") <= (LOGIN_BURST * 60 / LOGIN_PER_MINUTE + 1) * 1000


@dataclass
class UnderFlood:
    reads: list[float]  # seconds each authenticated GET took
    submissions: list[float]  # seconds each small batch submission took
    logins: list[int]  # the statuses the flood got

    def assert_fast(self) -> None:
        # Generous bounds for a shared two-core machine; the flood's own answers cost the event loop some.
        p95 = statistics.quantiles(self.reads, n=20, method="inclusive")[18]
        assert p95 < 0.5, f"read p95 {p95 * 1000:.0f} ms while logins were flooded: {sorted(self.reads)}"
        # Before the fix each waited behind the queued logins' scrypt in the default executor: 1.1-4 s.
        assert max(self.submissions) < 0.75, f"batch submissions while logins were flooded: {sorted(self.submissions)}"


async def _calls_under_login_flood(api: ApiClient, tenant: Tenant, profile_id: str) -> UnderFlood:
    """50 clients log in with wrong secrets as fast as they are answered, for about 3 s, while one
    identity reads and submits small batches (evaluated in a thread of the API's default executor)."""
    caller = api.with_token(tenant.admin.token)
    stop = asyncio.Event()
    result = UnderFlood([], [], [])

    async def flood() -> None:
        while not stop.is_set():
            r = await _login(api, "kms_ci_" + secrets.token_hex(16), "kms_cs_wrong")
            result.logins.append(r.status)

    async def timed(call: Awaitable[Reply], status: int) -> float:
        t0 = time.perf_counter()
        r = await call
        assert r.status == status, r.body
        return time.perf_counter() - t0

    # Warm: the first batch of a profile loads its issuing context.
    await timed(caller.post(BATCHES, {"profileId": profile_id, "items": [_item(-1)]}), 202)
    flooders = [asyncio.create_task(flood()) for _ in range(50)]
    try:
        await asyncio.sleep(0.5)  # the flood is under way before the first call
        for i in range(20):  # a few calls a second: under the identity's own limit
            result.reads.append(await timed(caller.get(_identities(tenant)), 200))
            if i % 4 == 0:
                result.submissions.append(await timed(caller.post(BATCHES, {
                    "profileId": profile_id, "items": [_item(i), _item(i + 1)]}), 202))
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*flooders)
    return result


async def test_reads_and_batch_submissions_stay_fast_while_fifty_clients_flood_login(
    worker: Stack, limited: Limited, tenant: Tenant
) -> None:
    pki = await make_pki(tenant.admin, tenant.project_id)

    under = await _calls_under_login_flood(limited.plain, tenant, pki.profile_id)

    under.assert_fast()
    assert under.logins.count(429) > len(under.logins) // 2, "the flood was not beyond the limit"


async def test_logins_within_the_limits_leave_batch_evaluation_its_threads(
    worker: Stack, stack: Stack, http: ApiClient, tenant: Tenant
) -> None:
    """With login limits off (0), every flooded login hashes its secret: in a few threads of its own."""
    pki = await make_pki(tenant.admin, tenant.project_id)
    url = stack.start_api(name="api-rl-off", env={"KMS_RATE_LIMIT_LOGIN_PER_MINUTE": "0",
                                                  "KMS_RATE_LIMIT_LOGIN_FAILURES_BURST": "0"})
    try:
        under = await _calls_under_login_flood(ApiClient(http.session, url), tenant, pki.profile_id)
    finally:
        stack.stop("api-rl-off")

    assert set(under.logins) == {401}, "a login was limited"
    under.assert_fast()


async def test_identity_beyond_its_limit_is_429_while_another_identity_is_served(
    limited: Limited, tenant: Tenant, make_tenant: Any
) -> None:
    other: Tenant = await make_tenant("rate-other")
    busy = limited.plain.with_token(tenant.admin.token)
    replies = await asyncio.gather(*(busy.get(_identities(tenant)) for _ in range(3 * IDENTITY_BURST)))

    statuses = [r.status for r in replies]
    assert statuses.count(200) >= IDENTITY_BURST and 429 in statuses, statuses
    refused = next(r for r in replies if r.status == 429)
    _assert_rate_limited(refused)
    assert "identity" in refused.body["message"]
    # The other API process draws from the same, empty bucket.
    elsewhere = limited.trusting.with_token(tenant.admin.token)
    assert 429 in [r.status for r in await asyncio.gather(*(elsewhere.get(_identities(tenant)) for _ in range(5)))]
    calm = limited.plain.with_token(other.admin.token)
    assert [(await calm.get(_identities(other))).status for _ in range(5)] == [200] * 5


async def test_caller_is_served_again_after_retry_after_seconds(limited: Limited, tenant: Tenant) -> None:
    replies = [await _login(limited.plain, tenant.client_id, tenant.client_secret) for _ in range(LOGIN_BURST + 2)]
    assert replies[-1].status == 429, [r.status for r in replies]
    retry_after = _assert_rate_limited(replies[-1])

    await asyncio.sleep(retry_after)

    assert (await _login(limited.plain, tenant.client_id, tenant.client_secret)).status == 200


async def test_failed_logins_for_one_client_id_are_limited_across_sources(limited: Limited, tenant: Tenant) -> None:
    _, other = await tenant.identity("viewer", "bystander")
    sources = [f"203.0.113.{n}" for n in range(1, FAILURE_BURST + 2)]  # a fresh address per attempt
    failures = [await _login(limited.trusting, tenant.client_id, "kms_cs_guess", source)
                for source in sources[:FAILURE_BURST]]
    assert [r.status for r in failures] == [401] * FAILURE_BURST

    # Locked: not even the right secret, from yet another address, until a token is back...
    locked = await _login(limited.trusting, tenant.client_id, tenant.client_secret, sources[-1])
    _assert_rate_limited(locked)
    assert "client id" in locked.body["message"]
    # ... while another identity logs in from those same addresses.
    for source in sources:
        assert (await _login(limited.trusting, other["clientId"], other["clientSecret"], source)).status == 200


async def test_forwarded_for_names_the_source_only_behind_a_trusted_proxy(limited: Limited, tenant: Tenant) -> None:
    attempts = LOGIN_BURST + 2
    behind_proxy = [await _login(limited.trusting, tenant.client_id, tenant.client_secret, f"198.51.100.{n}")
                    for n in range(attempts)]
    assert [r.status for r in behind_proxy] == [200] * attempts  # each address its own bucket

    spoofed = [await _login(limited.plain, tenant.client_id, tenant.client_secret, f"192.0.2.{n}")
               for n in range(attempts)]
    assert 429 in [r.status for r in spoofed]  # the peer is no proxy: the header is ignored


async def test_probes_and_metrics_are_never_limited_while_their_source_is(limited: Limited) -> None:
    docs = [await limited.plain.get("/openapi.json") for _ in range(SOURCE_BURST + 2)]
    assert docs[-1].status == 429, [r.status for r in docs]
    _assert_rate_limited(docs[-1])

    for path in ("/healthz", "/readyz", "/metrics"):
        assert [(await limited.plain.get(path)).status for _ in range(3 * SOURCE_BURST)] == [200] * 3 * SOURCE_BURST


async def test_crl_and_ocsp_callers_draw_from_their_own_larger_bucket(limited: Limited) -> None:
    docs = [await limited.plain.get("/openapi.json") for _ in range(SOURCE_BURST + 2)]
    assert docs[-1].status == 429
    # The source's ordinary bucket is empty; OCSP (here for a CA that does not exist: an OCSP
    # "unauthorized" answer) still has its own, and only past that bucket is it refused.
    url = f"{limited.plain.base}/api/v1/cert-manager/ocsp/{uuid.uuid4()}/AAAA"
    statuses = []
    for _ in range(RELYING_PARTY_BURST + 2):
        async with limited.plain.session.get(url) as resp:
            statuses.append(resp.status)
            if resp.status == 200:
                assert resp.content_type == "application/ocsp-response"
    assert statuses[:RELYING_PARTY_BURST] == [200] * RELYING_PARTY_BURST, statuses
    assert statuses[-1] == 429, statuses


async def test_with_redis_unreachable_reads_go_unlimited_and_logins_keep_a_local_limit(
    stack: Stack, limited_apis: LimitedApis, http: ApiClient, tenant: Tenant
) -> None:
    target = urlsplit(limited_apis.redis_url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 6379)
    try:
        url = stack.start_api(name="api-rl-cut", env={
            **TIGHT, "KMS_RATE_LIMIT_REDIS_URL": f"redis://127.0.0.1:{proxy.port}{target.path}"})
        api = ApiClient(http.session, url)
        proxy.cut()

        reads = await asyncio.gather(*(api.with_token(tenant.admin.token).get(_identities(tenant))
                                       for _ in range(2 * IDENTITY_BURST)))
        assert [r.status for r in reads] == [200] * 2 * IDENTITY_BURST  # fail open, not 503

        logins = [await _login(api, tenant.client_id, tenant.client_secret) for _ in range(LOGIN_BURST + 2)]
        assert [r.status for r in logins[:LOGIN_BURST]] == [200] * LOGIN_BURST
        _assert_rate_limited(logins[-1])
        assert "rate limit store unreachable" in stack.log_path("api-rl-cut").read_text()
    finally:
        stack.stop("api-rl-cut")
        proxy.close()


async def test_without_redis_each_process_keeps_its_own_limits_and_says_so_once(
    stack: Stack, http: ApiClient, tenant: Tenant
) -> None:
    # An AMQP broker (never contacted by a login) and no KMS_RATE_LIMIT_REDIS_URL: buckets in the process.
    url = stack.start_api(name="api-rl-amqp", env={**TIGHT, "KMS_BROKER_URL": "amqp://guest@127.0.0.1:1//"})
    try:
        api = ApiClient(http.session, url)
        logins = [await _login(api, tenant.client_id, tenant.client_secret) for _ in range(LOGIN_BURST + 2)]
        log = stack.log_path("api-rl-amqp").read_text()
    finally:
        stack.stop("api-rl-amqp")

    assert [r.status for r in logins[:LOGIN_BURST]] == [200] * LOGIN_BURST
    _assert_rate_limited(logins[-1])
    assert log.count("rate limits are kept in this process only") == 1
