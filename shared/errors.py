"""One error hierarchy for the whole service.

Every error a caller can cause is a ``KmsError`` subclass carrying the HTTP status it maps to; the API's
problem+json middleware is the only place that turns them into responses (RFC 9457), and the worker
stores ``str(error)`` as a request's ``errorMessage``. Messages are written for the person who sent
the request: they name the offending field or value, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of the input (``field`` is a dotted path such as ``altNames[2].value``)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class KmsError(Exception):
    """Base class: an error with an HTTP status, a short title and a detail for the caller."""

    status: int = 500
    title: str = "Internal Server Error"
    type_slug: str = "about:blank"
    # The ``error`` field of upstream's error body (DESIGN.md 5.1), which its clients log.
    error: str = "InternalServerError"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors or [])


class BadRequest(KmsError):
    status = 400
    title = "Bad Request"
    type_slug = "bad-request"
    error = "BadRequest"


class Unauthorized(KmsError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"
    error = "UnauthorizedError"


class Forbidden(KmsError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"
    error = "PermissionDenied"


class NotFound(KmsError):
    status = 404
    title = "Not Found"
    type_slug = "not-found"
    error = "NotFound"


class Conflict(KmsError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"
    error = "Conflict"


class PayloadTooLarge(KmsError):
    status = 413
    title = "Payload Too Large"
    type_slug = "payload-too-large"
    error = "PayloadTooLarge"


class PolicyViolation(KmsError):
    """Well-formed input that the certificate policy (or the issuer) does not allow.

    ``errors`` lists every violation at once, each naming the field it concerns.
    """

    status = 400
    title = "Bad Request"
    type_slug = "policy-violation"
    error = "BadRequest"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        if detail is None:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "request violates the policy"
        super().__init__(detail, errors)


class ValidationFailure(KmsError):
    """A request that fails the schema: a wrong type, a missing field, a malformed id (upstream's 422)."""

    status = 422
    title = "Unprocessable Content"
    type_slug = "validation-failure"
    error = "ValidationFailure"


class RateLimited(KmsError):
    """A caller over one of its rate limits; ``retry_after`` seconds from now it is served again."""

    status = 429
    title = "Too Many Requests"
    type_slug = "rate-limited"
    error = "RateLimitExceeded"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailable(KmsError):
    status = 503
    title = "Service Unavailable"
    type_slug = "service-unavailable"
    error = "ServiceUnavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ConfigurationError(Exception):
    """The service is misconfigured (for example no root key outside dev mode); it refuses to start."""
