"""An endpoint's health as values: its circuit breaker, its rate limit, and the latency
buckets its attempts are counted in.

Pure rules, no I/O: the store keeps the state these functions read and return, so every
worker sees the same breaker and shares the same rate, and a restart loses none of it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from croupier.domain.errors import ValidationFailed

# -- circuit breaker ------------------------------------------------------------------------


class BreakerState(StrEnum):
    #: Deliveries flow.
    CLOSED = "closed"
    #: Deliveries wait, without spending attempts, until ``until_ms``.
    OPEN = "open"
    #: One delivery (the probe) is being tried; the rest wait for its outcome.
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    """When an endpoint's breaker opens, and for how long.

    It opens after ``consecutive_failures`` failed attempts in a row, or when at least
    ``failure_rate`` of the attempts in the last ``window_s`` seconds failed and there were
    at least ``min_requests`` of them. After ``cooldown_s`` one probe goes through: a
    success closes it, a failure opens it for another cooldown.
    """

    consecutive_failures: int = 10
    failure_rate: float = 0.5
    window_s: int = 60
    min_requests: int = 20
    cooldown_s: int = 30

    def to_json(self) -> dict[str, Any]:
        return {
            "consecutive_failures": self.consecutive_failures,
            "failure_rate": self.failure_rate,
            "window_s": self.window_s,
            "min_requests": self.min_requests,
            "cooldown_s": self.cooldown_s,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> BreakerSettings:
        """Settings from what an endpoint stored or a request sent; missing keys default."""
        if not raw:
            return DEFAULT_BREAKER
        unknown = sorted(set(raw) - set(_BREAKER_LIMITS))
        if unknown:
            raise ValidationFailed(f"unknown breaker setting {unknown[0]!r}", field="breaker")
        values: dict[str, Any] = DEFAULT_BREAKER.to_json() | dict(raw)
        for name, (low, high) in _BREAKER_LIMITS.items():
            value = values[name]
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if name != "failure_rate" and not isinstance(value, int):
                number = False
            if not number or not low <= value <= high:
                kind = "a number" if name == "failure_rate" else "an integer"
                raise ValidationFailed(
                    f"breaker.{name} must be {kind} in {low}..{high}", field=f"breaker.{name}"
                )
        return cls(**values)


DEFAULT_BREAKER = BreakerSettings()
_BREAKER_LIMITS: dict[str, tuple[float, float]] = {
    "consecutive_failures": (1, 10_000),
    "failure_rate": (0.01, 1.0),
    "window_s": (10, 86_400),
    "min_requests": (1, 1_000_000),
    "cooldown_s": (1, 86_400),
}


@dataclass(frozen=True)
class Breaker:
    """An endpoint's breaker as the store keeps it."""

    state: BreakerState = BreakerState.CLOSED
    #: Open: when the next probe may go. Half-open: when the probe's turn runs out (its
    #: sender died), so that another may go.
    until_ms: int | None = None
    consecutive_failures: int = 0
    opened_at_ms: int | None = None


#: A breaker that never opened.
CLOSED = Breaker()


def probe_due(breaker: Breaker, now_ms: int) -> bool:
    """Whether the breaker lets a probe through now (it is not closed)."""
    return breaker.state is not BreakerState.CLOSED and (breaker.until_ms or 0) <= now_ms


def admits(breaker: Breaker, now_ms: int) -> int | None:
    """How many deliveries the breaker lets through now: None for no limit (closed), 1 for
    a probe, 0 while they wait."""
    if breaker.state is BreakerState.CLOSED:
        return None
    return 1 if probe_due(breaker, now_ms) else 0


def probing(breaker: Breaker, now_ms: int, turn_ms: int) -> Breaker:
    """The breaker once a probe has been let through; ``turn_ms`` later another may go."""
    return Breaker(
        BreakerState.HALF_OPEN,
        now_ms + turn_ms,
        breaker.consecutive_failures,
        breaker.opened_at_ms,
    )


def after_attempts(
    breaker: Breaker,
    successes: Iterable[bool],
    *,
    now_ms: int,
    settings: BreakerSettings,
    window: tuple[int, int] | None = None,
) -> Breaker:
    """The breaker after attempts that ended (in order, True for a success).

    ``window`` is (attempts, failures) over the last ``settings.window_s``, these attempts
    included; None when the caller did not count them (only the run of failures counts).
    """
    state, until, run, opened = (
        breaker.state,
        breaker.until_ms,
        breaker.consecutive_failures,
        breaker.opened_at_ms,
    )
    for ok in successes:
        if ok:
            # A success anywhere, the probe's or a straggler's, shows the endpoint is back.
            state, until, run, opened = BreakerState.CLOSED, None, 0, None
            continue
        run += 1
        if state is BreakerState.HALF_OPEN:
            # The probe failed: wait another cooldown.
            state, until = BreakerState.OPEN, now_ms + settings.cooldown_s * 1000
        elif state is BreakerState.CLOSED and run >= settings.consecutive_failures:
            state, until, opened = BreakerState.OPEN, now_ms + settings.cooldown_s * 1000, now_ms
    if state is BreakerState.CLOSED and window is not None and trips(window, settings):
        state, until, opened = BreakerState.OPEN, now_ms + settings.cooldown_s * 1000, now_ms
    return Breaker(state, until, run, opened)


def trips(window: tuple[int, int], settings: BreakerSettings) -> bool:
    """Whether (attempts, failures) over the window is enough failure to open."""
    attempts, failures = window
    return attempts >= settings.min_requests and failures >= settings.failure_rate * attempts


# -- rate limit ------------------------------------------------------------------------------

#: The bucket holds this many seconds of an endpoint's rate (at least one request): a
#: worker that comes back within it never loses a token, and no burst beyond it reaches
#: the endpoint.
BURST_S = 0.2
MAX_RATE_PER_S = 100_000.0


def validate_rate(rate_per_s: float | None) -> float | None:
    if rate_per_s is None:
        return None
    if isinstance(rate_per_s, bool) or not 0.01 <= rate_per_s <= MAX_RATE_PER_S:
        raise ValidationFailed(
            f"rate_limit_per_s must be in 0.01..{MAX_RATE_PER_S:g}, or null for no limit",
            field="rate_limit_per_s",
        )
    return float(rate_per_s)


def bucket_size(rate_per_s: float) -> float:
    return max(1.0, rate_per_s * BURST_S)


def tokens_now(rate_per_s: float, tokens: float | None, at_ms: int | None, now_ms: int) -> float:
    """The tokens in an endpoint's bucket at ``now_ms``; a bucket never used is full."""
    size = bucket_size(rate_per_s)
    if tokens is None or at_ms is None:
        return size
    return min(size, tokens + max(0, now_ms - at_ms) * rate_per_s / 1000)


def next_token_ms(rate_per_s: float, tokens: float, now_ms: int) -> int:
    """When the bucket will next hold a whole token."""
    missing = max(0.0, 1.0 - tokens)
    return now_ms + max(1, math.ceil(missing * 1000 / rate_per_s))


# -- latency buckets -------------------------------------------------------------------------

#: Upper bounds (ms) of the buckets attempts' durations are counted in; a last bucket holds
#: the rest. About 1.5 times apart: a percentile read from them is within that of the truth.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1_000, 1_500, 2_000, 3_000, 5_000, 7_000, 10_000, 15_000, 20_000, 30_000, 60_000,
)  # fmt: skip
BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def bucket_of(duration_ms: float) -> int:
    """The index of the bucket ``duration_ms`` falls in."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, duration_ms)


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of durations counted in buckets, interpolated within its
    bucket; None when nothing was counted."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0
            high = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else low
            return float(low + (high - low) * max(0.0, rank - seen) / n)
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


def minute_of(ms: int) -> int:
    """The start of the minute ``ms`` falls in: the stats' unit of time."""
    return ms - ms % 60_000
