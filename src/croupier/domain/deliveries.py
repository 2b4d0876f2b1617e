"""Deliveries and attempts as values, and the rules that turn an HTTP result into a status."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum

from croupier.domain.retry import DEFAULT_POLICY, RetryPolicy, next_attempt_at


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: Statuses the dispatcher still has work for.
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)

#: How much of a response body an attempt keeps.
RESPONSE_BODY_LIMIT = 4096


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint."""

    id: str
    tenant_id: str
    event_id: str
    endpoint_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int
    last_status_code: int | None = None
    last_error: str | None = None
    #: The event's ordering key when the endpoint delivers in order; None otherwise.
    ordered_key: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP try came back with; ``status_code`` is None when no response arrived."""

    started_at_ms: int
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    response_body: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Attempt:
    """One recorded HTTP try of a delivery."""

    id: str
    delivery_id: str
    number: int
    result: AttemptResult
    request_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What happens to a delivery after an attempt."""

    status: DeliveryStatus
    next_attempt_at_ms: int | None
    disable_endpoint: bool = False


def decide(
    result: AttemptResult,
    *,
    schedule: Sequence[int],
    attempts_in_cycle: int,
    now_ms: int,
    rng: random.Random,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Decision:
    """Apply the outcome rules: 2xx succeeds, 410 disables the endpoint, the rest retries.

    A delivery whose schedule is spent becomes ``dead``. ``Retry-After`` on 429 and 503 moves
    the next try later, never earlier than the schedule.
    """
    if result.succeeded:
        return Decision(DeliveryStatus.SUCCEEDED, None)
    retry_after = (
        parse_retry_after(result.response_headers, now_ms)
        if result.status_code in (429, 503)
        else None
    )
    due = next_attempt_at(
        schedule, attempts_in_cycle, now_ms, rng=rng, retry_after_s=retry_after, policy=policy
    )
    status = DeliveryStatus.DEAD if due is None else DeliveryStatus.FAILED
    return Decision(status, due, disable_endpoint=result.status_code == 410)


def parse_retry_after(headers: Mapping[str, str], now_ms: int) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if valid."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)
