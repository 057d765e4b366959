"""One ACME server per profile (DESIGN.md 8): its route table, and what every ACME answer gets.

Every route is public (ACME authenticates with the JWS, not a bearer token) and goes through
``acme_route``, which finds the profile (404 unless it exists and enrolls over ACME), turns every error
into an ACME problem document, and adds the headers RFC 8555 asks for on every answer: a fresh
``Replay-Nonce``, ``Cache-Control: no-store`` and the directory ``Link``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import asyncpg
from aiohttp import web

from api.acme.jws import Signed, new_nonce, verify
from api.acme.problems import AcmeProblem, problem_response
from api.acme.schemas import Urls
from api.context import DB, ISSUING_CONTEXTS, RATE_LIMITER, REQUEST_ID, SETTINGS
from api.routing import Routes, absolute_url
from shared.config import Settings
from shared.errors import KmsError, RateLimited
from shared.profiles import IssuingContext

routes = Routes("acme")
log = logging.getLogger("kms.api")
PREFIX = "/api/v1/cert-manager/acme/profiles/"
BASE = PREFIX + "{profileId}"
# A JWS around a CSR of the largest size the RA accepts (16 KiB) fits well within this.
BODY_LIMIT = 64 * 1024
RETRY_AFTER_PROCESSING = 1


@dataclass
class Acme:
    """One ACME request: the profile it is for, its issuing context, its URLs, the database pool."""

    request: web.Request
    profile_id: UUID
    ctx: IssuingContext
    urls: Urls
    pool: asyncpg.Pool
    settings: Settings

    @property
    def project_id(self) -> UUID:
        return self.ctx.profile.project_id

    @property
    def acme_config(self) -> dict[str, object]:
        return self.ctx.profile.acme_config or {}

    def url(self) -> str:
        """The URL this request was sent to, as a client must have written it into the JWS."""
        return absolute_url(self.request, self.settings.public_url, self.request.path)

    async def verify(self, key: Literal["jwk", "kid", "either"] = "kid") -> Signed:
        return await verify(self.request, self.pool, url=self.url(), profile_id=self.profile_id,
                            account_base=self.urls.accounts(), key=key, body_limit=BODY_LIMIT)


AcmeHandler = Callable[[Acme], Awaitable[web.StreamResponse]]


def acme_route(method: str, tail: str, *, summary: str) -> Callable[[AcmeHandler], AcmeHandler]:
    def register(handler: AcmeHandler) -> AcmeHandler:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await _serve(request, handler)
        serve.__name__ = handler.__name__
        routes.route(method, BASE + tail, summary=summary, public=True)(serve)
        return handler
    return register


async def _serve(request: web.Request, handler: AcmeHandler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    base = None
    try:
        # The ACME server's own rate limit answer (the middleware leaves ACME routes to this).
        await request.app[RATE_LIMITER].unauthenticated_request(request)
        acme = await _acme(request)
        base = acme.urls
        response = await handler(acme)
    except AcmeProblem as problem:
        response = problem_response(problem, request.get(REQUEST_ID))
    except RateLimited as exc:
        response = problem_response(AcmeProblem("rateLimited", exc.detail, retry_after=exc.retry_after),
                                    request.get(REQUEST_ID))
    except KmsError as exc:
        kind = "serverInternal" if exc.status >= 500 else "malformed"
        response = problem_response(AcmeProblem(kind, exc.detail, status=exc.status,
                                                retry_after=getattr(exc, "retry_after", None)),
                                    request.get(REQUEST_ID))
    except web.HTTPException:
        raise
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
        log.warning("dependency unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        response = problem_response(AcmeProblem("serverInternal", "a dependency is unavailable; retry shortly",
                                                status=503, retry_after=5), request.get(REQUEST_ID))
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        response = problem_response(AcmeProblem("serverInternal", "an unexpected error occurred; quote the "
                                                "request id", status=500), request.get(REQUEST_ID))
    response.headers["Cache-Control"] = "no-store"
    try:
        response.headers["Replay-Nonce"] = await new_nonce(request.app[DB], settings.acme_nonce_lifetime_seconds)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The answer stands; a client without a nonce asks new-nonce (which then answers 503).
        log.warning("no nonce for an ACME answer", extra={"error": f"{type(exc).__name__}: {exc}"})
    if base is not None:
        response.headers.add("Link", f'<{base.directory()}>;rel="index"')
    return response


async def _acme(request: web.Request) -> Acme:
    try:
        profile_id = UUID(request.match_info["profileId"])
    except ValueError:
        raise AcmeProblem("malformed", "no such ACME server", status=404) from None
    pool = request.app[DB]
    ctx = await request.app[ISSUING_CONTEXTS].get(pool, profile_id)
    if ctx is None or ctx.profile.enrollment_type != "acme":
        raise AcmeProblem("malformed", "no such ACME server: the profile does not exist or does not enroll "
                          "over ACME", status=404)
    settings = request.app[SETTINGS]
    urls = Urls(absolute_url(request, settings.public_url, PREFIX + str(profile_id)))
    return Acme(request=request, profile_id=profile_id, ctx=ctx, urls=urls, pool=pool, settings=settings)


def path_id(acme: Acme, name: str) -> UUID:
    """A UUID from the path; anything else names nothing (404)."""
    try:
        return UUID(acme.request.match_info[name])
    except ValueError:
        raise AcmeProblem("malformed", f"no such resource ({name} is not an id)", status=404) from None


def json_answer(body: object, *, status: int = 200, location: str | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    out = dict(headers or {})
    if location is not None:
        out["Location"] = location
    return web.json_response(body, status=status, headers=out)
