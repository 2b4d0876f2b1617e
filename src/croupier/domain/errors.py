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
    """The idempotency key was used before for a different request."""

    code = "IDEMPOTENCY_MISMATCH"


class IdempotencyKeyRequired(ValidationFailed):
    code = "IDEMPOTENCY_KEY_REQUIRED"


class InvalidAmount(ValidationFailed):
    """An amount that is malformed, negative or zero where that is not allowed, or too big."""

    code = "INVALID_AMOUNT"


class AmountPrecision(ValidationFailed):
    """More decimals than the currency's minor unit."""

    code = "AMOUNT_PRECISION"


class UnknownCurrency(ValidationFailed):
    code = "UNKNOWN_CURRENCY"


class CurrencyMismatch(ValidationFailed):
    code = "CURRENCY_MISMATCH"


class RoundMismatch(ValidationFailed):
    code = "ROUND_MISMATCH"


class PlayerMismatch(ValidationFailed):
    code = "PLAYER_MISMATCH"


class SessionInvalid(CroupierError):
    """The game session is unknown, belongs to another tenant, or has expired."""

    code = "SESSION_INVALID"


class PlayerNotFound(NotFound):
    code = "PLAYER_NOT_FOUND"


class BetNotFound(NotFound):
    code = "BET_NOT_FOUND"


class Conflict(CroupierError):
    code = "CONFLICT"


class IdempotencyInProgress(Conflict):
    """A request with the same idempotency key is still being worked on."""

    code = "IDEMPOTENCY_IN_PROGRESS"
    retryable = True


class Duplicate(Conflict):
    """The business id (a bet, a credit, a player) is taken by an earlier request."""

    code = "DUPLICATE"


class InsufficientFunds(Conflict):
    code = "INSUFFICIENT_FUNDS"


class BetCancelled(Conflict):
    code = "BET_CANCELLED"


class BetAlreadySettled(Conflict):
    code = "BET_ALREADY_SETTLED"


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


class DeadlineExceeded(CroupierError):
    """The caller's deadline passed before the work began; nothing was done."""

    code = "DEADLINE_EXCEEDED"
    retryable = True


class Unavailable(CroupierError):
    code = "UNAVAILABLE"
    retryable = True
