"""Operational endpoints: /healthz, /readyz (503 while a dependency is down), /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from pydantic import BaseModel

from api.app import ROUTE_TABLES
from tests.api_client import ApiClient, Tenant
from tests.proxy import CuttableProxy
from tests.stack import Stack


async def test_healthz_and_readyz_are_ok_with_dependencies_up(http: ApiClient) -> None:
    assert (await http.get("/healthz")).status == 200
    r = await http.get("/readyz")
    assert r.status == 200 and r.body["checks"] == {"database": "ok", "broker": "ok"}


async def _wait_status(client: ApiClient, path: str, status: int, timeout: float = 20) -> ApiClient:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await client.get(path)
        if r.status == status:
            return r  # type: ignore[return-value]
        assert asyncio.get_running_loop().time() < deadline, (path, r.status, r.body)
        await asyncio.sleep(0.2)


async def test_readyz_is_503_while_postgres_or_redis_is_unreachable_and_200_when_back(
    stack: Stack, http: ApiClient
) -> None:
    pg = urlsplit(stack.database_url)
    rd = urlsplit(stack.broker_url)
    pg_proxy = CuttableProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    redis_proxy = CuttableProxy(rd.hostname or "127.0.0.1", rd.port or 6379)
    try:
        url = stack.start_api(name="api-proxied", env={
            "KMS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/{stack.db_name}",
            "KMS_BROKER_URL": f"redis://127.0.0.1:{redis_proxy.port}/{stack.redis_db}",
        })
        proxied = ApiClient(http.session, url)
        await _wait_status(proxied, "/readyz", 200)
        for proxy, name in ((pg_proxy, "database"), (redis_proxy, "broker")):
            proxy.cut()
            r = await _wait_status(proxied, "/readyz", 503)
            assert r.is_problem() and name in r.body["detail"]  # type: ignore[attr-defined]
            assert int(r.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
            assert (await proxied.get("/healthz")).status == 200  # the process itself is fine
            proxy.restore()
            await _wait_status(proxied, "/readyz", 200)
    finally:
        stack.stop("api-proxied")
        pg_proxy.close()
        redis_proxy.close()


async def test_protected_call_during_database_outage_is_503_not_500(stack: Stack, tenant: Tenant) -> None:
    pg = urlsplit(stack.database_url)
    proxy = CuttableProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    try:
        url = stack.start_api(name="api-pg-outage", env={
            "KMS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/{stack.db_name}"})
        client = ApiClient(tenant.admin.session, url, tenant.admin.token)
        assert (await client.get(f"/api/v1/projects/{tenant.project_id}/identities")).status == 200
        proxy.cut()
        r = await client.get(f"/api/v1/projects/{tenant.project_id}/identities")
        assert r.status == 503 and r.is_problem() and "Retry-After" in r.headers
        proxy.restore()
        r = await client.get(f"/api/v1/projects/{tenant.project_id}/identities")
        assert r.status == 200
    finally:
        stack.stop("api-pg-outage")
        proxy.close()


async def test_metrics_count_requests_and_latency_by_route(http: ApiClient) -> None:
    await http.get("/healthz")
    r = await http.get("/metrics")
    assert r.status == 200 and r.content_type == "text/plain"
    text = r.body
    assert 'kms_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'kms_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in text


async def test_openapi_lists_every_route_with_the_models_that_validate_it(http: ApiClient) -> None:
    r = await http.get("/openapi.json")
    assert r.status == 200
    doc = r.body
    for table in ROUTE_TABLES:
        for ep in table.endpoints:
            op = doc["paths"][ep.path][ep.method.lower()]
            if ep.body is not None:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                name = ref.rsplit("/", 1)[1]
                assert doc["components"]["schemas"][name] == _schema(ep.body)
    login = doc["components"]["schemas"]["LoginBody"]
    assert set(login["required"]) == {"clientId", "clientSecret"}


def _schema(model: type[BaseModel]) -> dict[str, object]:
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


async def test_openapi_types_id_path_parameters_as_uuids_and_lists_every_error_body_field(http: ApiClient) -> None:
    doc = (await http.get("/openapi.json")).body
    certificate = doc["paths"]["/api/v1/cert-manager/certificates/{certificateId}"]["get"]
    assert certificate["parameters"] == [{"name": "certificateId", "in": "path", "required": True,
                                          "schema": {"type": "string", "format": "uuid"}}]
    by_slug = doc["paths"]["/api/v1/projects/slug/{slug}"]["get"]
    assert by_slug["parameters"][0]["schema"] == {"type": "string"}
    problem = doc["components"]["schemas"]["Problem"]
    error_body = {"type", "title", "status", "detail", "errors", "requestId", "message", "reqId", "statusCode",
                  "error", "details"}
    assert set(problem["properties"]) == set(problem["required"]) == error_body
    r = await http.get("/api/v1/cert-manager/certificates/not-a-uuid")
    assert r.status in (401, 422) and set(r.body) == error_body, r.body
