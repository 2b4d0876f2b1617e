"""When to try a delivery again: a pure function of the attempt, the outcome, now and an rng."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from croupier.domain.errors import ValidationFailed

#: Seed 002: immediately, then 30 s, 2 min, 10 min, 1 h, 4 h, 12 h, 24 h; 8 attempts, then dead.
DEFAULT_SCHEDULE: tuple[int, ...] = (0, 30, 120, 600, 3600, 14400, 43200, 86400)
MAX_SCHEDULE_LENGTH = 30
MAX_DELAY_S = 7 * 86400


@dataclass(frozen=True)
class RetryPolicy:
    """How retries spread out beyond the endpoint's own schedule.

    ``jitter`` adds up to that fraction of a delay (never removes any), so that thousands of
    deliveries that failed together do not come back in the same millisecond.
    ``retry_after_cap_s`` bounds how far a receiver's ``Retry-After`` can push the next try.
    """

    jitter: float = 0.1
    retry_after_cap_s: int = 3600


DEFAULT_POLICY = RetryPolicy()


def next_attempt_at(
    schedule: Sequence[int],
    attempts_in_cycle: int,
    now_ms: int,
    *,
    rng: random.Random,
    retry_after_s: float | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> int | None:
    """Return when the next attempt is due (epoch ms), or ``None`` if the schedule is spent.

    ``schedule[k]`` is the delay in seconds before attempt ``k + 1``; ``attempts_in_cycle``
    counts the attempts already made since the delivery was created or last replayed,
    including the one that just failed. A ``Retry-After`` hint may move the next try later
    than the schedule says, within ``policy.retry_after_cap_s``, but never earlier.
    """
    if attempts_in_cycle >= len(schedule):
        return None
    delay_s = float(schedule[attempts_in_cycle])
    if policy.jitter > 0 and delay_s > 0:
        delay_s += delay_s * policy.jitter * rng.random()
    if retry_after_s is not None and retry_after_s > 0:
        delay_s = max(delay_s, min(retry_after_s, float(policy.retry_after_cap_s)))
    return now_ms + round(delay_s * 1000)


def validate_schedule(schedule: Sequence[int]) -> tuple[int, ...]:
    """Check an endpoint's schedule and return it as a tuple; the first delay must be 0."""
    if not schedule:
        raise ValidationFailed(
            "retry_schedule must have at least one entry", field="retry_schedule"
        )
    if len(schedule) > MAX_SCHEDULE_LENGTH:
        raise ValidationFailed(
            f"retry_schedule has {len(schedule)} entries; at most {MAX_SCHEDULE_LENGTH}",
            field="retry_schedule",
        )
    if schedule[0] != 0:
        raise ValidationFailed(
            "retry_schedule[0] must be 0: the first attempt is immediate", field="retry_schedule.0"
        )
    for i, delay in enumerate(schedule):
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_S:
            raise ValidationFailed(
                f"retry_schedule[{i}] must be an integer number of seconds in 0..{MAX_DELAY_S}",
                field=f"retry_schedule.{i}",
            )
    return tuple(schedule)
