"""A small asynchronous Python SDK for the Hanzo KMS PKI HTTP API (it talks HTTP only).

    async with KmsClient("http://127.0.0.1:8080") as kms:
        await kms.login(client_id, client_secret)
        result = await kms.issue(profile_id, attributes={"commonName": "a.example.com"})

Bulk batches (an extension of the API):

    created = await kms.submit_batch(profile_id, [{"attributes": {...}}, {"csr": pem}, ...])
    view = await kms.wait_for_batch(created["batchId"])
    async for item in kms.stream_batch_items(created["batchId"], status="issued"):
        ...

Waiting is the server's job where it can be: ``?wait=N`` long-polls (at most 30 s a call), and between
calls the client sleeps for the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

ISSUE = "/api/v1/cert-manager/certificates"
REQUESTS = ISSUE + "/certificate-requests"
BATCHES = "/api/v1/cert-manager/certificate-batches"
PROFILES = "/api/v1/cert-manager/certificate-profiles"
APPLICATIONS = "/api/v1/cert-manager/applications"
FINAL = ("issued", "failed")
MAX_WAIT = 30  # the API's ceiling for ?wait=N
MAX_BATCH_ITEMS = 10_000  # the API refuses larger batches
MAX_ITEMS_PAGE = 1000  # the items endpoint's largest ?limit=
NDJSON = "application/x-ndjson"


class ApiError(Exception):
    """A problem+json answer: ``status``, ``title``, ``detail`` and the field ``errors``."""

    def __init__(self, status: int, problem: dict[str, Any], *, retry_after: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after = retry_after  # the answer's Retry-After (429, 503), in seconds
        errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors", []))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}"
                         + (f" ({errors})" if errors else ""))


def item_cursor(after_index: int) -> str | None:
    """The cursor that makes the batch items endpoint answer from ``after_index + 1`` on (None: from 0).

    The API's item cursors are ``i<index of the last item seen>`` (``api/batches/schemas.py``); building one
    lets an interrupted download resume after any index instead of paging again from the start.
    """
    return None if after_index < 0 else f"i{after_index}"


def flat_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer of ``POST /certificates`` (``{certificate: {...} | null, certificateRequestId, status,
    message}``) in the flat shape of a request view, the one ``wait_for`` returns."""
    issued = answer.get("certificate")
    flat = dict(issued) if isinstance(issued, dict) else {}
    flat.update(certificateRequestId=answer["certificateRequestId"], status=answer["status"],
                errorMessage=answer.get("message"))
    return flat


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: not sent by this API; treat as "soon"
        return 1.0


@dataclass(frozen=True)
class Token:
    """A login's or a renewal's answer: the token, seconds until it ends, and seconds from the login past
    which no renewal extends it."""

    access_token: str
    expires_in: int
    access_token_max_ttl: int
    token_type: str = "Bearer"  # noqa: S105  (a scheme name, not a secret)


class KmsClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60,
                 user_agent: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # A stream may last longer than one call may: it only has to keep sending.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KmsClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout,
                                              connector=aiohttp.TCPConnector(limit=64))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if self.user_agent:
            hdrs.setdefault("User-Agent", self.user_agent)
        return hdrs

    async def call(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """Returns (status, decoded body, headers); raises ApiError for a problem+json answer."""
        assert self._session is not None, "use `async with KmsClient(...)`"
        hdrs = self._headers(headers)
        data = None
        if body is not None:
            data = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        async with self._session.request(method, self.base_url + path, data=data, headers=hdrs,
                                         params=params) as resp:
            raw = await resp.read()
            decoded = json.loads(raw) if raw and resp.content_type.endswith("json") else raw.decode()
            if resp.status >= 400:
                raise ApiError(resp.status, decoded if isinstance(decoded, dict) else {"detail": decoded},
                               retry_after=_retry_after(resp.headers))
            return resp.status, decoded, dict(resp.headers)

    async def login(self, client_id: str, client_secret: str) -> str:
        token, _ = await self.login_session(client_id, client_secret)
        return token

    async def login_session(self, client_id: str, client_secret: str) -> tuple[str, int]:
        """Logs in; returns the access token and its lifetime in seconds (``expiresIn``)."""
        token = await self.login_token(client_id, client_secret)
        return token.access_token, token.expires_in

    async def login_token(self, client_id: str, client_secret: str) -> Token:
        """Logs in; the token and upstream's fields about it (``accessTokenMaxTTL`` included)."""
        _, body, _ = await self.call("POST", "/api/v1/auth/universal-auth/login",
                                     {"clientId": client_id, "clientSecret": client_secret})
        return self._took(body)

    async def renew_token(self) -> Token:
        """Extends the current token by its ttl again, never past the login's ``accessTokenMaxTTL``."""
        if not self.token:
            raise ValueError("not logged in: call login() first")
        _, body, _ = await self.call("POST", "/api/v1/auth/token/renew", {"accessToken": self.token})
        return self._took(body)

    def _took(self, body: dict[str, Any]) -> Token:
        token = Token(str(body["accessToken"]), int(body.get("expiresIn") or 0),
                      int(body.get("accessTokenMaxTTL") or 0), str(body.get("tokenType") or "Bearer"))
        self.token = token.access_token
        return token

    async def project_by_slug(self, slug: str) -> dict[str, Any]:
        """``{id, name, slug}`` of the caller's project named by ``slug`` (another project's: 404)."""
        _, body, _ = await self.call("GET", f"/api/v1/projects/slug/{quote(slug, safe='')}")
        project: dict[str, Any] = body
        return project

    async def profile_by_slug(self, slug: str, project_id: str | None = None) -> dict[str, Any]:
        """The certificate profile named ``slug`` (in ``project_id``, else the caller's project)."""
        params = {"projectId": project_id} if project_id else None
        _, body, _ = await self.call("GET", f"{PROFILES}/slug/{quote(slug, safe='')}", params=params)
        return dict(body["certificateProfile"])

    async def application_by_name(self, name: str) -> dict[str, Any]:
        _, body, _ = await self.call("GET", f"{APPLICATIONS}/by-name/{quote(name, safe='')}")
        return dict(body["application"])

    async def application_profiles(self, application_id: str) -> list[dict[str, Any]]:
        """``[{applicationId, profileId, profileSlug}]``: the profiles the application groups."""
        _, body, _ = await self.call("GET", f"{APPLICATIONS}/{quote(application_id, safe='')}/profiles")
        return [dict(p) for p in body.get("profiles") or []]

    # -- single certificates ---------------------------------------------------------------------

    async def submit(self, profile_id: str, *, csr: str | None = None, attributes: dict[str, Any] | None = None,
                     wait: int = 0, idempotency_key: str | None = None,
                     application_id: str | None = None) -> dict[str, Any]:
        """The POST answer as upstream shapes it: ``{certificate: {...} | None, certificateRequestId,
        status, message}`` (``flat_answer`` turns it into the flat request view)."""
        body: dict[str, Any] = {"profileId": profile_id}
        if application_id is not None:
            body["applicationId"] = application_id
        if csr is not None:
            body["csr"] = csr
        if attributes is not None:
            body["attributes"] = attributes
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"wait": str(min(wait, MAX_WAIT))} if wait > 0 else None
        _, result, _ = await self.call("POST", ISSUE, body, params=params, headers=headers)
        return dict(result)

    async def request_status(self, request_id: str, *, wait: int = 0) -> tuple[dict[str, Any], float | None]:
        """The request and the server's Retry-After (None once final)."""
        params = {"wait": str(min(wait, MAX_WAIT))} if wait > 0 else None
        _, result, headers = await self.call("GET", f"{REQUESTS}/{request_id}", params=params)
        return dict(result), _retry_after(headers)

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
        """Submit and wait for the outcome (``status`` issued or failed), ``timeout`` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = flat_answer(await self.submit(profile_id, csr=csr, attributes=attributes, wait=int(timeout),
                                              idempotency_key=idempotency_key))
        if first["status"] in FINAL:
            return first
        return await self.wait_for(first["certificateRequestId"], timeout=max(0.0, deadline - loop.time()))

    async def certificate(self, certificate_id: str) -> dict[str, Any]:
        """A certificate's metadata: ``status`` (active, revoked, expired), ``notAfter``,
        ``renewedByCertificateId``, ``revocationReason``, ..."""
        _, body, _ = await self.call("GET", f"{ISSUE}/{quote(certificate_id, safe='')}")
        return dict(body["certificate"])

    async def bundle(self, certificate_id: str) -> dict[str, Any]:
        """``{certificate, certificateChain, privateKey | None, serialNumber}`` (the key when the server
        made it and the caller may read it)."""
        _, body, _ = await self.call("GET", f"{ISSUE}/{quote(certificate_id, safe='')}/bundle")
        return dict(body)

    async def renew(self, certificate_id: str, *, remove_roots: bool | None = None, wait: int = 0) -> dict[str, Any]:
        """Renews a server-key certificate (same profile and names, a new key): the flat answer
        ``{certificateRequestId, status, certificate | None, ...}``."""
        body = {} if remove_roots is None else {"removeRootsFromChain": remove_roots}
        params = {"wait": str(min(wait, MAX_WAIT))} if wait > 0 else None
        _, answer, _ = await self.call("POST", f"{ISSUE}/{quote(certificate_id, safe='')}/renew", body, params=params)
        return dict(answer)

    async def revoke(self, certificate_id: str, reason: str = "UNSPECIFIED") -> dict[str, Any]:
        """Revoke a certificate -> ``{message, serialNumber, revokedAt}`` (409 if it already is)."""
        _, result, _ = await self.call("POST", f"{ISSUE}/{quote(certificate_id, safe='')}/revoke",
                                       {"revocationReason": reason})
        return dict(result)

    # -- bulk batches ----------------------------------------------------------------------------

    async def submit_batch(self, profile_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Submits up to 10,000 items (each ``{csr? | attributes?, profileId?}``) as one batch.
        Returns ``{batchId, total, failedAtSubmission}``: invalid items fail alone, as failed items."""
        if not items:
            raise ValueError("a batch needs at least one item")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS:,} items; got {len(items):,}")
        _, created, _ = await self.call("POST", BATCHES, {"profileId": profile_id, "items": items})
        return dict(created)

    async def batch(self, batch_id: str, *, wait: int = 0) -> tuple[dict[str, Any], float | None]:
        """The batch's live counters ``{status, total, issued, failed, pending, ...}`` and the server's
        Retry-After (None once completed). ``wait`` long-polls until the batch completes (at most 30 s)."""
        params = {"wait": str(min(wait, MAX_WAIT))} if wait > 0 else None
        _, view, headers = await self.call("GET", f"{BATCHES}/{batch_id}", params=params)
        return dict(view), _retry_after(headers)

    async def wait_for_batch(self, batch_id: str, *, timeout: float = 600, long_poll: int = 25) -> dict[str, Any]:
        """Long-poll until every item of the batch is issued or failed, honouring Retry-After between polls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            view, retry_after = await self.batch(batch_id, wait=max(0, min(long_poll, int(remaining))))
            if view["status"] == "completed":
                return view
            if loop.time() >= deadline:
                raise TimeoutError(f"batch {batch_id} still has {view['pending']} pending items after {timeout}s")
            if retry_after:
                await asyncio.sleep(min(retry_after, max(0.0, deadline - loop.time())))

    async def batch_items(self, batch_id: str, *, status: str | None = None, cursor: str | None = None,
                          limit: int = 100) -> dict[str, Any]:
        """One page ``{items, nextCursor}`` of a batch's items in index order (``status``: pending, issued
        or failed; pending includes processing)."""
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        _, page, _ = await self.call("GET", f"{BATCHES}/{batch_id}/items", params=params)
        return dict(page)

    async def iter_batch_items(self, batch_id: str, *, status: str | None = None, after: int = -1,
                               page_size: int = MAX_ITEMS_PAGE) -> AsyncIterator[dict[str, Any]]:
        """Every matching item after index ``after``, page by page."""
        cursor = item_cursor(after)
        while True:
            page = await self.batch_items(batch_id, status=status, cursor=cursor, limit=page_size)
            for item in page["items"]:
                yield dict(item)
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def stream_batch_items(self, batch_id: str, *, status: str | None = None,
                                 after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Every matching item after index ``after`` in one NDJSON response (the server pages internally,
        so neither side holds the whole batch in memory)."""
        assert self._session is not None, "use `async with KmsClient(...)`"
        params = {}
        if status is not None:
            params["status"] = status
        cursor = item_cursor(after)
        if cursor is not None:
            params["cursor"] = cursor
        async with self._session.get(f"{self.base_url}{BATCHES}/{batch_id}/items", params=params,
                                     headers=self._headers({"Accept": NDJSON}),
                                     timeout=self._stream_timeout) as resp:
            if resp.status >= 400:
                raw = await resp.read()
                problem = json.loads(raw) if raw and resp.content_type.endswith("json") else {"detail": raw.decode()}
                raise ApiError(resp.status, problem if isinstance(problem, dict) else {"detail": str(problem)})
            # Split lines here rather than with StreamReader.readline, whose line length is capped.
            pending = b""
            async for chunk in resp.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield dict(json.loads(line))
            if pending.strip():
                yield dict(json.loads(pending))
