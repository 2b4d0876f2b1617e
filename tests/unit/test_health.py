"""The pure rules of an endpoint's health: its breaker, its token bucket, its latency
buckets; and the scaled clock that drills run on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from croupier.domain.clock import ScaledClock
from croupier.domain.errors import ValidationFailed
from croupier.domain.health import (
    CLOSED,
    LATENCY_BOUNDS_MS,
    Breaker,
    BreakerSettings,
    BreakerState,
    admits,
    after_attempts,
    bucket_of,
    bucket_size,
    next_token_ms,
    percentile,
    probing,
    tokens_now,
    trips,
    validate_rate,
)

SETTINGS = BreakerSettings(consecutive_failures=3, cooldown_s=30, min_requests=10)
NOW = 1_000_000


def test_a_closed_breaker_opens_on_the_nth_failure_in_a_row_and_a_success_resets_the_run() -> None:
    b = after_attempts(CLOSED, [False, False], now_ms=NOW, settings=SETTINGS)
    assert (b.state, b.consecutive_failures) == (BreakerState.CLOSED, 2)
    b = after_attempts(b, [True], now_ms=NOW, settings=SETTINGS)
    assert (b.state, b.consecutive_failures) == (BreakerState.CLOSED, 0)
    b = after_attempts(b, [False, False, False], now_ms=NOW, settings=SETTINGS)
    assert b.state is BreakerState.OPEN
    assert (b.until_ms, b.opened_at_ms) == (NOW + 30_000, NOW)


def test_an_open_breaker_admits_nothing_until_the_cooldown_then_one_probe() -> None:
    b = Breaker(BreakerState.OPEN, NOW + 30_000, 3, NOW)
    assert admits(b, NOW + 29_999) == 0
    assert admits(b, NOW + 30_000) == 1
    assert admits(CLOSED, NOW) is None
    probe = probing(b, NOW + 30_000, 60_000)
    assert probe.state is BreakerState.HALF_OPEN
    # The probe's turn: nothing more until it ends or runs out.
    assert admits(probe, NOW + 30_001) == 0
    assert admits(probe, NOW + 90_000) == 1


def test_a_failed_probe_opens_for_another_cooldown_and_a_good_one_closes() -> None:
    probe = Breaker(BreakerState.HALF_OPEN, NOW + 60_000, 3, NOW - 30_000)
    again = after_attempts(probe, [False], now_ms=NOW, settings=SETTINGS)
    assert (again.state, again.until_ms) == (BreakerState.OPEN, NOW + 30_000)
    # Still the first opening: how long it has been down.
    assert again.opened_at_ms == NOW - 30_000
    closed = after_attempts(probe, [True], now_ms=NOW, settings=SETTINGS)
    assert closed == CLOSED


def test_the_failure_rate_opens_only_with_enough_volume() -> None:
    assert not trips((9, 9), SETTINGS)
    assert trips((10, 5), SETTINGS)
    assert not trips((10, 4), SETTINGS)
    b = after_attempts(CLOSED, [False], now_ms=NOW, settings=SETTINGS, window=(20, 12))
    assert b.state is BreakerState.OPEN


def test_breaker_settings_default_what_is_missing_and_refuse_what_is_wrong() -> None:
    assert BreakerSettings.from_json(None) == BreakerSettings()
    assert BreakerSettings.from_json({"cooldown_s": 5}).cooldown_s == 5
    assert BreakerSettings.from_json({"failure_rate": 1}).failure_rate == 1
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cooldown_s": 0}, "breaker.cooldown_s"),
        ({"window_s": 5}, "breaker.window_s"),
        ({"failure_rate": 0}, "breaker.failure_rate"),
        ({"min_requests": True}, "breaker.min_requests"),
        ({"consecutive_failures": "3"}, "breaker.consecutive_failures"),
        ({"nope": 1}, "breaker"),
    ]
    for bad, field in cases:
        with pytest.raises(ValidationFailed) as caught:
            BreakerSettings.from_json(bad)
        assert caught.value.field == field


def test_a_token_bucket_holds_a_fifth_of_a_second_and_refills_at_the_rate() -> None:
    assert bucket_size(100) == 20
    assert bucket_size(2) == 1
    assert tokens_now(100, None, None, NOW) == 20
    assert tokens_now(100, 0.0, NOW, NOW + 50) == pytest.approx(5)
    assert tokens_now(100, 0.0, NOW, NOW + 10_000) == 20
    assert next_token_ms(100, 0.5, NOW) == NOW + 5
    assert next_token_ms(100, 3.0, NOW) == NOW + 1


def test_a_rate_out_of_range_is_refused() -> None:
    assert validate_rate(None) is None
    assert validate_rate(5) == 5.0
    for bad in (0, -1, 0.001, 1e9, True):
        with pytest.raises(ValidationFailed):
            validate_rate(bad)


def test_durations_fall_in_buckets_and_percentiles_interpolate_within_them() -> None:
    assert bucket_of(0.4) == 0
    assert bucket_of(1) == 0
    assert bucket_of(1.5) == 1
    assert bucket_of(90_000) == len(LATENCY_BOUNDS_MS)
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    assert percentile(counts, 0.5) is None
    counts[bucket_of(12)] = 100  # (10, 15]
    assert 10 <= (percentile(counts, 0.5) or 0) <= 15
    counts[bucket_of(400)] = 2  # (300, 500]
    assert 300 <= (percentile(counts, 0.99) or 0) <= 500


def test_a_scaled_clock_runs_faster_than_the_wall_clock() -> None:
    clock = ScaledClock(1000, start_ms=0)
    time.sleep(0.01)
    assert clock.now_ms() >= 10_000
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(0)
