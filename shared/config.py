"""The one settings class. Every variable starts with ``KMS_``; nothing else reads ``os.environ``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KMS_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/kms"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Base64 of 32 bytes, or a file holding it. Required outside dev mode (see shared.secrets.envelope).
    root_key: str | None = Field(default=None, repr=False)
    root_key_file: Path | None = None
    # The signing root key: wraps the data keys that seal CA private keys. Workers only; the API never
    # reads it, so a compromised front end cannot decrypt a CA key (DESIGN.md 4.4). Same format.
    ca_root_key: str | None = Field(default=None, repr=False)
    ca_root_key_file: Path | None = None
    # The API's external base URL, for Location headers; unset, the request's own scheme and host are used.
    public_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # Let several API processes listen on the same port (SO_REUSEPORT): the kernel spreads connections.
    api_reuse_port: bool = False
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Limits and timings (defaults fit the design; tests shorten some).
    max_body_bytes: int = 1024 * 1024
    # Bulk batches carry up to 10,000 CSRs; only their endpoint accepts bodies this large.
    max_batch_body_bytes: int = 64 * 1024 * 1024
    # A login's token lasts token_ttl_seconds; POST /api/v1/auth/token/renew extends it by as much again,
    # never past token_max_ttl_seconds after the login (the answer's accessTokenMaxTTL; upstream's
    # universal-auth default of 30 days). A ttl above the maximum is cut to it.
    token_ttl_seconds: int = Field(default=3600, ge=1)
    token_max_ttl_seconds: int = Field(default=30 * 86400, ge=1)
    # A web UI session (api.web) ends after this long without a request, or at sign-out.
    web_session_idle_seconds: int = Field(default=1800, ge=1)
    # How long an API process trusts a token it looked up (a deleted identity's tokens are dropped at once,
    # by NOTIFY); 0 looks every token up on every request.
    token_cache_seconds: float = Field(default=10.0, ge=0)
    db_pool_min: int = 2
    db_pool_max: int = 10
    # How long a caller waits for a pooled connection before the API answers 503 (a worker retries).
    db_acquire_timeout_seconds: float = 5.0
    # How far notBefore is set back, so that clocks slightly behind still accept a new certificate.
    backdate_seconds: int = 60
    # How long a worker may hold a claimed request before the reconciler takes it back.
    lease_seconds: int = 60
    # A pending request older than this with no progress is re-enqueued by the reconciler.
    reconcile_after_seconds: int = 10
    reconcile_interval_seconds: float = 5.0
    # How often beat looks for certificates due for server-driven renewal (worker.renewal).
    renewal_interval_seconds: float = Field(default=60.0, gt=0)
    # A CRL is valid this long (thisUpdate to nextUpdate), and re-signed once less than half of it remains;
    # beat looks for CRLs to re-sign every crl_refresh_interval_seconds (DESIGN.md 7).
    crl_validity_seconds: int = Field(default=7 * 24 * 3600, ge=40)
    crl_refresh_interval_seconds: float = 60.0
    # OCSP (DESIGN.md 7): a worker issues each CA a delegated responder certificate valid this long, and a
    # new one once less than half remains (beat looks every ocsp_refresh_interval_seconds); the API signs
    # each answer with it, valid (thisUpdate to nextUpdate) for ocsp_response_validity_seconds.
    ocsp_responder_validity_seconds: int = Field(default=2 * 86400, ge=600)
    ocsp_response_validity_seconds: int = Field(default=3600, ge=60)
    ocsp_refresh_interval_seconds: float = 60.0
    max_attempts: int = 5
    # With a Redis broker, every worker pool process listens on a Redis channel for new ready requests and
    # claims them at once (worker.ready_listener); off, the API's doorbell is always a Celery message.
    ready_listener: bool = True
    ca_key_cache_seconds: int = 300

    # External CAs (DESIGN.md 9; worker.external). Every HTTP call to one upstream CA takes a token from that
    # CA's bucket (in Redis, shared by every worker): a rate and a burst. Unset, the bucket lives in the broker
    # when it is Redis (else in each worker process).
    external_requests_per_second: float = Field(default=10.0, gt=0)
    external_burst: int = Field(default=20, ge=1)
    external_budget_redis_url: str | None = Field(default=None, repr=False)
    # A request whose upstream stays unreachable, answers 5xx or rate-limits it is retried this many times,
    # backing off exponentially with jitter (never sooner than the upstream's Retry-After), then fails with
    # the upstream's last reason.
    external_max_attempts: int = Field(default=8, ge=1)
    external_backoff_base_seconds: float = Field(default=2.0, gt=0)
    external_backoff_max_seconds: float = Field(default=300.0, gt=0)
    external_http_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long one attempt polls an authorization or order before it lets go and retries later.
    external_poll_seconds: float = Field(default=120.0, gt=0)
    # dns-01: after the TXT record is visible on the zone's primary, wait this long for its secondaries
    # (and the CA's resolvers) before answering the challenge, as certbot's --dns-rfc2136-propagation-seconds.
    external_dns_propagation_seconds: float = Field(default=10.0, ge=0)

    # Rate limits (api.rate_limits): token buckets, a rate and a burst; 0 in either turns a limit off.
    # The defaults stop floods, not busy clients: a fleet restarting behind one NAT logs in from one
    # source, and one identity may read back every item of a 10,000-item batch at once.
    # Where the buckets live; unset, the broker when it is Redis, else in each API process.
    rate_limit_redis_url: str | None = Field(default=None, repr=False)
    rate_limit_login_per_minute: float = 600  # logins from one source
    rate_limit_login_burst: int = 300
    rate_limit_login_failures_per_minute: float = 30  # failed logins for one client id, from any source
    rate_limit_login_failures_burst: int = 30
    rate_limit_per_identity_per_second: float = 500  # authenticated requests of one identity
    rate_limit_per_identity_burst: int = 10_000
    rate_limit_per_source_per_second: float = 20  # other unauthenticated requests from one source
    rate_limit_per_source_burst: int = 100
    rate_limit_relying_party_per_second: float = 2000  # CRLs, CA certificates and OCSP from one source
    rate_limit_relying_party_burst: int = 5000
    # Comma-separated proxy addresses or CIDRs whose X-Forwarded-For names the source; empty: none.
    trusted_proxies: str = ""

    # ACME enrollment (DESIGN.md 8). The validator (a worker on the kms.external queue) fetches http-01
    # answers from this port and resolves dns-01 TXT records with this resolver: "system", or
    # comma-separated addresses of DNS servers, each optionally with ":port" ("127.0.0.1:5353").
    acme_http01_port: int = Field(default=80, ge=1, le=65535)
    acme_dns_resolver: str = "system"
    # A challenge is tried until it passes or this many seconds have passed since the client asked;
    # each try waits at most acme_validation_attempt_timeout_seconds, and tries are this far apart.
    acme_validation_timeout_seconds: float = Field(default=60.0, gt=0)
    acme_validation_attempt_timeout_seconds: float = Field(default=10.0, gt=0)
    acme_validation_retry_seconds: float = Field(default=3.0, gt=0)
    acme_nonce_lifetime_seconds: int = Field(default=3600, ge=10)
    acme_order_lifetime_seconds: int = Field(default=7 * 86400, ge=60)
    # Caps per account: orders not yet final (pending, ready, processing), and new orders per window;
    # past either the server answers 429 rateLimited with Retry-After. 0 turns a cap off.
    acme_max_pending_orders: int = Field(default=300, ge=0)
    acme_new_orders_per_window: int = Field(default=300, ge=0)
    acme_new_orders_window_seconds: int = Field(default=3 * 3600, ge=1)
    # How often beat removes expired nonces, orders and authorizations, and re-sends validations whose
    # message was lost.
    acme_cleanup_interval_seconds: float = Field(default=300.0, gt=0)
    # How often beat vacuums the service's tables when the PostgreSQL server's autovacuum is off (with it on,
    # the task does nothing); 0: never (worker.maintenance).
    vacuum_interval_seconds: float = Field(default=60.0, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
