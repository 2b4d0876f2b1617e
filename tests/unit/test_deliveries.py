from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from croupier.domain.deliveries import AttemptResult, DeliveryStatus, decide, parse_retry_after
from croupier.domain.retry import RetryPolicy

NOW = 1_700_000_000_000
SCHEDULE = (0, 30, 120)
POLICY = RetryPolicy(jitter=0.0)


def result(status: int | None, headers: dict[str, str] | None = None) -> AttemptResult:
    return AttemptResult(
        started_at_ms=NOW,
        duration_ms=1.0,
        status_code=status,
        error=None if status else "connection failed",
        response_headers=headers or {},
    )


def run(res: AttemptResult, attempts: int = 1) -> tuple[DeliveryStatus, int | None, bool]:
    d = decide(
        res,
        schedule=SCHEDULE,
        attempts_in_cycle=attempts,
        now_ms=NOW,
        rng=random.Random(0),
        policy=POLICY,
    )
    return d.status, d.next_attempt_at_ms, d.disable_endpoint


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_succeeds(status: int) -> None:
    assert run(result(status)) == (DeliveryStatus.SUCCEEDED, None, False)


@pytest.mark.parametrize("status", [None, 100, 301, 302, 304, 400, 401, 404, 429, 500, 503])
def test_anything_else_fails_and_is_retried_per_schedule(status: int | None) -> None:
    assert run(result(status)) == (DeliveryStatus.FAILED, NOW + 30_000, False)


def test_410_gone_disables_the_endpoint_at_once() -> None:
    status, _, disable = run(result(410))
    assert status is DeliveryStatus.FAILED
    assert disable


def test_a_failure_on_the_last_attempt_is_dead() -> None:
    assert run(result(500), attempts=3) == (DeliveryStatus.DEAD, None, False)


def test_retry_after_counts_only_on_429_and_503() -> None:
    hint = {"Retry-After": "100"}
    assert run(result(429, hint))[1] == NOW + 100_000
    assert run(result(503, hint))[1] == NOW + 100_000
    assert run(result(500, hint))[1] == NOW + 30_000


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after({"retry-after": " 42 "}, NOW) == 42.0
    when = datetime.fromtimestamp(NOW / 1000 + 300, tz=UTC)
    assert parse_retry_after({"Retry-After": format_datetime(when, usegmt=True)}, NOW) == 300.0


@pytest.mark.parametrize("value", ["soon", "-5", "", "1.5e9", "Wed, 99 Foo 2020"])
def test_an_unreadable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after({"Retry-After": value}, NOW) is None
