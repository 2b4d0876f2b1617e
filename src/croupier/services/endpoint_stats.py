"""Endpoint stats: how an endpoint's attempts went over the last 5 minutes, hour and day.

Read from the attempts the dispatcher counts per endpoint and minute; the latency
percentiles come from a histogram whose buckets are about 1.5 times apart, so each is
within that factor of the true value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from croupier.domain.clock import Clock
from croupier.domain.endpoints import Endpoint
from croupier.domain.errors import NotFound
from croupier.domain.health import minute_of, percentile
from croupier.services.ports import RecentError, Store, UnitOfWork, WindowTotals

#: The windows stats are given over, by name, each ending now.
WINDOWS: tuple[tuple[str, int], ...] = (
    ("5m", 5 * 60_000),
    ("1h", 3_600_000),
    ("24h", 86_400_000),
)
#: How long the per-minute counts are kept: the longest window, and a day to spare.
RETENTION_MS = 48 * 3_600_000


@dataclass(frozen=True)
class Latency:
    """Percentiles of the attempts' durations in ms; None when there was no attempt."""

    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class WindowStats:
    """An endpoint's attempts over one window."""

    attempts: int
    succeeded: int
    failed: int
    #: ``succeeded / attempts``; None when there was no attempt.
    success_rate: float | None
    latency_ms: Latency
    #: The window's latest failed attempt, if any.
    last_error: RecentError | None


@dataclass(frozen=True)
class EndpointStats:
    """An endpoint's stats as of ``as_of_ms``, per window name (``5m``, ``1h``, ``24h``)."""

    endpoint_id: str
    as_of_ms: int
    windows: Mapping[str, WindowStats]
    #: The endpoint as of the same transaction: its breaker and health.
    endpoint: Endpoint


class EndpointStatsService:
    """Reads an endpoint's stats, and forgets the counts past their retention."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def stats(self, tenant_id: str, endpoint_id: str) -> EndpointStats:
        """The endpoint's stats over each of :data:`WINDOWS`; ``NotFound`` for an endpoint
        the tenant does not have (deleted, or another tenant's)."""
        now = self.clock.now_ms()
        lengths = [length for _, length in WINDOWS]

        def work(uow: UnitOfWork) -> tuple[Endpoint, list[WindowTotals]]:
            endpoint = uow.endpoints.get(tenant_id, endpoint_id)
            if endpoint is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            totals = uow.stats.windows(tenant_id, endpoint_id, now_ms=now, windows_ms=lengths)
            return endpoint, totals

        endpoint, totals = await self.store.run(work, write=False)
        windows = {name: _window(w) for (name, _), w in zip(WINDOWS, totals, strict=True)}
        return EndpointStats(endpoint_id, now, windows, endpoint)

    async def purge(self, *, limit: int = 1000) -> int:
        """Forget up to ``limit`` endpoint-minutes that ended over :data:`RETENTION_MS`
        ago; how many."""
        before = minute_of(self.clock.now_ms() - RETENTION_MS)
        return await self.store.run(lambda uow: uow.stats.purge(before, limit))


def _window(totals: WindowTotals) -> WindowStats:
    attempts, failed = totals.attempts, totals.failures
    succeeded = attempts - failed
    return WindowStats(
        attempts=attempts,
        succeeded=succeeded,
        failed=failed,
        success_rate=succeeded / attempts if attempts else None,
        latency_ms=Latency(
            p50=_ms(percentile(totals.histogram, 0.5)),
            p95=_ms(percentile(totals.histogram, 0.95)),
            p99=_ms(percentile(totals.histogram, 0.99)),
        ),
        last_error=totals.last_error,
    )


def _ms(value: float | None) -> float | None:
    # Tenths of a millisecond: the buckets are 1.5 times apart, more digits would be noise.
    return None if value is None else round(value, 1)
