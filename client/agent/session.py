"""Logging in as the machine identity, and keeping the access token alive.

Credentials, as upstream reads them (``util.GetEnvVarOrFileContent``): the environment first
(``INFISICAL_UNIVERSAL_AUTH_CLIENT_ID``, and upstream's ``INFISICAL_UNIVERSAL_CLIENT_SECRET``; also
``INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET``, ``KMS_CLIENT_ID`` and ``KMS_CLIENT_SECRET``), else the files
``auth.config.client-id`` and ``client-secret`` name (trimmed). With ``remove_client_secret_on_read`` the
secret file is deleted once read, and the secret kept in memory for later logins.

The token is renewed (``POST /api/v1/auth/token/renew``) once two thirds of its lifetime have passed,
when the agent next needs it (an agent asleep until its next renewal lets it lapse and logs in again
then, rather than waking to renew a token it does not use); a fresh login replaces it once renewal can
no longer extend it (``accessTokenMaxTTL``), when renewal is refused, and after any 401.

Errors are sorted for the callers: ``AuthError`` (the identity cannot log in), ``Unreachable`` (no
answer, a timeout, 408, 429 or 5xx: wait and try again; carries ``Retry-After``), and the SDK's
``ApiError`` for any other answer, which is final for that request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp

from client.agent.config import AgentConfig
from client.sdk import ApiError, KmsClient, Token

log = logging.getLogger("kms.agent.session")
T = TypeVar("T")
USER_AGENT = "kms-pki-agent/0.1"
CLIENT_ID_VARIABLES = ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "KMS_CLIENT_ID")
CLIENT_SECRET_VARIABLES = ("INFISICAL_UNIVERSAL_CLIENT_SECRET", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
                           "KMS_CLIENT_SECRET")
RENEW_AT = 2 / 3  # of the token's lifetime, as upstream
MARGIN_SECONDS = 2.0  # a token this close to its end (or a tenth of its lifetime, if less) is not sent


class AuthError(Exception):
    """The identity cannot log in: credentials missing or unreadable, or refused by the API."""


class Unreachable(Exception):
    """No usable answer from the API this time (it may come back): not a verdict on the certificate."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def describe(exc: ApiError) -> str:
    """An API answer in one line: status, title, detail, each field error."""
    problem = exc.problem
    detail = problem.get("detail") or problem.get("message") or ""
    errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or []
                       if isinstance(e, dict) and str(e.get("message")) not in str(detail))
    title = problem.get("title") or problem.get("error") or "refused"
    return f"{exc.status} {title}" + (f": {detail}" if detail else "") + (f" ({errors})" if errors else "")


def is_transient(exc: ApiError) -> bool:
    return exc.status in (408, 429) or exc.status >= 500


class Session:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.client = KmsClient(config.address, user_agent=USER_AGENT)
        self._secret: str | None = None
        self._token: Token | None = None
        self._obtained = 0.0  # monotonic time of the current token's login or renewal
        self._logged_in = 0.0  # monotonic time of the login it descends from
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Session:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(*exc)

    async def call(self, operation: Callable[[KmsClient], Awaitable[T]], what: str) -> T:
        """Runs ``operation`` with a live token; after a 401 logs in again and runs it once more."""
        for attempt in (1, 2):
            await self._ensure_token()
            started = time.monotonic()
            try:
                result = await operation(self.client)
                log.debug("API call", extra={"call": what, "seconds": round(time.monotonic() - started, 3)})
                return result
            except ApiError as exc:
                log.debug("API call", extra={"call": what, "status": exc.status,
                                             "seconds": round(time.monotonic() - started, 3)})
                if exc.status == 401 and attempt == 1:
                    log.info("the access token was refused; logging in again", extra={"call": what})
                    self._token = None
                    continue
                if is_transient(exc):
                    raise Unreachable(f"{what}: {describe(exc)}", exc.retry_after) from None
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise Unreachable(f"{what}: cannot reach {self.config.address}: {type(exc).__name__}: {exc}") \
                    from None
        raise AssertionError("unreachable")

    # -- the token ---------------------------------------------------------------------------------

    async def _ensure_token(self) -> None:
        async with self._lock:
            token = self._token
            if token is not None:
                now = time.monotonic()
                age = now - self._obtained
                if age < token.expires_in * RENEW_AT:
                    return
                left = token.expires_in - age
                margin = min(MARGIN_SECONDS, token.expires_in / 10)
                renewable = self._logged_in + token.access_token_max_ttl - now > margin
                if left > margin and renewable:
                    outcome = await self._renew()
                    # A renewal that found no server keeps the token while it lasts (tried again next call).
                    if outcome == "renewed" or outcome == "unanswered":
                        return
            await self._login()

    async def _renew(self) -> str:
        """"renewed", "refused" (log in again) or "unanswered"."""
        try:
            token = await self.client.renew_token()
        except ApiError as exc:
            if is_transient(exc):
                log.warning("access token renewal failed; will try again", extra={"error": describe(exc)})
                return "unanswered"
            log.info("access token renewal refused; logging in again", extra={"error": describe(exc)})
            return "refused"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("access token renewal failed; will try again", extra={"error": f"{type(exc).__name__}: {exc}"})
            return "unanswered"
        self._token, self._obtained = token, time.monotonic()
        log.info("access token renewed", extra={"expiresInSeconds": token.expires_in})
        return "renewed"

    async def _login(self) -> None:
        client_id, secret = self._credentials()
        try:
            token = await self.client.login_token(client_id, secret)
        except ApiError as exc:
            if is_transient(exc):
                raise Unreachable(f"login: {describe(exc)}", exc.retry_after) from None
            raise AuthError(f"login as {client_id} refused: {describe(exc)}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"login: cannot reach {self.config.address}: {type(exc).__name__}: {exc}") from None
        self._token = token
        self._obtained = self._logged_in = time.monotonic()
        log.info("logged in", extra={"clientId": client_id, "expiresInSeconds": token.expires_in,
                                     "accessTokenMaxTTL": token.access_token_max_ttl})

    def _credentials(self) -> tuple[str, str]:
        client_id = _from_environment(CLIENT_ID_VARIABLES) or _from_file(self.config.client_id_path, "client-id")
        secret = _from_environment(CLIENT_SECRET_VARIABLES) or self._secret
        if not secret:
            secret = _from_file(self.config.client_secret_path, "client-secret")
            if self.config.remove_client_secret_on_read:
                try:
                    Path(self.config.client_secret_path).unlink()
                except OSError as exc:
                    log.warning("could not remove the client secret file", extra={"error": str(exc)})
        self._secret = secret
        return client_id, secret


def _from_environment(names: tuple[str, ...]) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def _from_file(path: str, key: str) -> str:
    if not path:
        raise AuthError(f"no {key}: set auth.config.{key} to a file holding it (or the environment variable)")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise AuthError(f"unable to read the {key} from '{path}': {exc.strerror or exc}") from None
    if not value:
        raise AuthError(f"the {key} file '{path}' is empty")
    return value
