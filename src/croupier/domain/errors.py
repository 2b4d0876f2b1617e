"""The one error tree of croupier.

Every failure a caller can see is a :class:`CroupierError` with a stable ``code``. The REST
layer maps codes to HTTP statuses in one table (``api/rest/errors.py``); nothing below the
API knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class CroupierError(Exception):
    """Base of every error a client may see."""

    code: str = "INTERNAL"
    retryable: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(CroupierError):
    code = "NOT_FOUND"


class Unauthorized(CroupierError):
    code = "UNAUTHORIZED"


class Forbidden(CroupierError):
    code = "FORBIDDEN"


class ValidationFailed(CroupierError):
    """Input that is well-formed but breaks a rule; ``field`` names the culprit."""

    code = "VALIDATION_FAILED"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, details={"field": field} if field else None)
        self.field = field


class UnknownEventType(ValidationFailed):
    code = "UNKNOWN_EVENT_TYPE"


class SchemaViolation(ValidationFailed):
    code = "SCHEMA_VIOLATION"


class InvalidUrl(ValidationFailed):
    code = "INVALID_URL"


class IdempotencyMismatch(CroupierError):
    code = "IDEMPOTENCY_MISMATCH"


class Conflict(CroupierError):
    code = "CONFLICT"


class ConcurrentWrite(Conflict):
    """Two writers raced for the same unique value; trying again resolves it."""

    code = "CONCURRENT_WRITE"
    retryable = True


class DeliveryInFlight(Conflict):
    code = "DELIVERY_IN_FLIGHT"
    retryable = True


class EventTypeReadOnly(Conflict):
    code = "EVENT_TYPE_READ_ONLY"


class EndpointDisabled(Conflict):
    code = "ENDPOINT_DISABLED"


class PayloadTooLarge(CroupierError):
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(CroupierError):
    code = "UNAVAILABLE"
    retryable = True
