from __future__ import annotations

import random

import pytest

from croupier.domain.errors import ValidationFailed
from croupier.domain.retry import (
    DEFAULT_SCHEDULE,
    RetryPolicy,
    next_attempt_at,
    validate_schedule,
)

NOW = 1_700_000_000_000
NO_JITTER = RetryPolicy(jitter=0.0)


def rng() -> random.Random:
    return random.Random(1)


def test_the_default_schedule_is_the_eight_attempts_of_the_provider_guide() -> None:
    assert DEFAULT_SCHEDULE == (0, 30, 120, 600, 3600, 14400, 43200, 86400)


@pytest.mark.parametrize(
    ("attempts_made", "delay_s"),
    [(1, 30), (2, 120), (3, 600), (4, 3600), (5, 14400), (6, 43200), (7, 86400)],
)
def test_each_failed_attempt_waits_the_delay_the_schedule_gives_the_next(
    attempts_made: int, delay_s: int
) -> None:
    due = next_attempt_at(DEFAULT_SCHEDULE, attempts_made, NOW, rng=rng(), policy=NO_JITTER)
    assert due == NOW + delay_s * 1000


def test_after_the_last_attempt_there_is_no_next_one() -> None:
    assert next_attempt_at(DEFAULT_SCHEDULE, 8, NOW, rng=rng(), policy=NO_JITTER) is None


def test_jitter_only_ever_adds_and_stays_within_its_fraction() -> None:
    policy = RetryPolicy(jitter=0.1)
    generator = random.Random(3)
    for _ in range(500):
        due = next_attempt_at(DEFAULT_SCHEDULE, 1, NOW, rng=generator, policy=policy)
        assert due is not None
        assert NOW + 30_000 <= due <= NOW + 33_000


def test_the_same_rng_seed_gives_the_same_times() -> None:
    policy = RetryPolicy(jitter=0.1)
    first = [next_attempt_at(DEFAULT_SCHEDULE, 3, NOW, rng=random.Random(9), policy=policy)]
    again = [next_attempt_at(DEFAULT_SCHEDULE, 3, NOW, rng=random.Random(9), policy=policy)]
    assert first == again


def test_retry_after_moves_the_next_try_later_but_never_earlier() -> None:
    later = next_attempt_at(DEFAULT_SCHEDULE, 1, NOW, rng=rng(), retry_after_s=90, policy=NO_JITTER)
    assert later == NOW + 90_000
    earlier = next_attempt_at(
        DEFAULT_SCHEDULE, 1, NOW, rng=rng(), retry_after_s=5, policy=NO_JITTER
    )
    assert earlier == NOW + 30_000


def test_retry_after_is_bounded_by_the_cap() -> None:
    policy = RetryPolicy(jitter=0.0, retry_after_cap_s=600)
    due = next_attempt_at(DEFAULT_SCHEDULE, 1, NOW, rng=rng(), retry_after_s=10**9, policy=policy)
    assert due == NOW + 600_000


def test_retry_after_never_revives_a_spent_schedule() -> None:
    assert next_attempt_at((0, 30), 2, NOW, rng=rng(), retry_after_s=10) is None


@pytest.mark.parametrize(
    "schedule",
    [[], [5, 10], [0, -1], [0, 10**9], [0] * 31, [0, 1.5], [0, True]],
)
def test_a_bad_schedule_is_refused_with_the_field_named(schedule: list[int]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_schedule(schedule)
    assert caught.value.field is not None
    assert caught.value.field.startswith("retry_schedule")


def test_a_good_schedule_comes_back_as_a_tuple() -> None:
    assert validate_schedule([0, 1, 2]) == (0, 1, 2)
