"""A small asynchronous Python SDK for the Hanzo KMS PKI HTTP API (it talks HTTP only).

    async with KmsClient("http://127.0.0.1:8080") as kms:
        await kms.login(client_id, client_secret)
        result = await kms.issue(profile_id, attributes={"commonName": "a.example.com"})
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

ISSUE = "/api/v1/cert-manager/certificates"
REQUESTS = ISSUE + "/certificate-requests"
FINAL = ("issued", "failed")


class ApiError(Exception):
    """A problem+json answer: ``status``, ``title``, ``detail`` and the field ``errors``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors", []))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}"
                         + (f" ({errors})" if errors else ""))


class KmsClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KmsClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout,
                                              connector=aiohttp.TCPConnector(limit=64))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """Returns (status, decoded body, headers); raises ApiError for a problem+json answer."""
        assert self._session is not None, "use `async with KmsClient(...)`"
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        async with self._session.request(method, self.base_url + path, data=data, headers=hdrs,
                                         params=params) as resp:
            raw = await resp.read()
            decoded = json.loads(raw) if raw and resp.content_type.endswith("json") else raw.decode()
            if resp.status >= 400:
                raise ApiError(resp.status, decoded if isinstance(decoded, dict) else {"detail": decoded})
            return resp.status, decoded, dict(resp.headers)

    async def login(self, client_id: str, client_secret: str) -> str:
        _, body, _ = await self.call("POST", "/api/v1/auth/universal-auth/login",
                                     {"clientId": client_id, "clientSecret": client_secret})
        self.token = body["accessToken"]
        return str(self.token)

    async def submit(self, profile_id: str, *, csr: str | None = None, attributes: dict[str, Any] | None = None,
                     wait: int = 0, idempotency_key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"profileId": profile_id}
        if csr is not None:
            body["csr"] = csr
        if attributes is not None:
            body["attributes"] = attributes
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"wait": str(wait)} if wait else None
        _, result, _ = await self.call("POST", ISSUE, body, params=params, headers=headers)
        return dict(result)

    async def request_status(self, request_id: str, *, wait: int = 0) -> tuple[dict[str, Any], float | None]:
        """The request and the server's Retry-After (None once final)."""
        params = {"wait": str(wait)} if wait else None
        _, result, headers = await self.call("GET", f"{REQUESTS}/{request_id}", params=params)
        retry = headers.get("Retry-After")
        return dict(result), float(retry) if retry else None

    async def wait_for(self, request_id: str, *, timeout: float = 120, long_poll: int = 25) -> dict[str, Any]:
        """Long-poll until the request is issued or failed, honouring Retry-After between polls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            result, retry_after = await self.request_status(request_id, wait=max(0, min(long_poll, int(remaining))))
            if result["status"] in FINAL:
                return result
            if loop.time() >= deadline:
                raise TimeoutError(f"certificate request {request_id} still {result['status']} after {timeout}s")
            if retry_after:
                await asyncio.sleep(min(retry_after, max(0.0, deadline - loop.time())))

    async def issue(self, profile_id: str, *, csr: str | None = None, attributes: dict[str, Any] | None = None,
                    timeout: float = 120, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit and wait for the outcome (``status`` issued or failed)."""
        first = await self.submit(profile_id, csr=csr, attributes=attributes, wait=min(int(timeout), 30),
                                  idempotency_key=idempotency_key)
        if first["status"] in FINAL:
            return first
        return await self.wait_for(first["certificateRequestId"], timeout=timeout)
