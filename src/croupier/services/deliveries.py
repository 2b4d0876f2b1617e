"""Reading deliveries and their attempts; retrying one; replaying an endpoint's window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from croupier.domain.clock import Clock
from croupier.domain.deliveries import Attempt, Delivery, DeliveryStatus
from croupier.domain.errors import (
    Conflict,
    DeliveryInFlight,
    EndpointDisabled,
    NotFound,
    ValidationFailed,
)
from croupier.services.pagination import Page, check_limit, encode_cursor, int_cursor
from croupier.services.ports import DeliveryFilter, Store

REPLAY_CHUNK = 1000


class ReplayScope(StrEnum):
    """Which deliveries a replay sends again."""

    DEAD = "dead"
    FAILED = "failed"
    ALL = "all"

    @property
    def statuses(self) -> tuple[DeliveryStatus, ...]:
        if self is ReplayScope.DEAD:
            return (DeliveryStatus.DEAD,)
        if self is ReplayScope.FAILED:
            return (DeliveryStatus.FAILED,)
        return (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.DEAD)


@dataclass(frozen=True)
class DeliveryWithAttempts:
    delivery: Delivery
    attempts: list[Attempt]


class DeliveryService:
    def __init__(
        self, store: Store, clock: Clock, on_due: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_due = on_due

    async def list(
        self, tenant_id: str, flt: DeliveryFilter, *, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        """Newest first."""
        check_limit(limit)
        async with self.store.unit_of_work(write=False) as uow:
            rows = await uow.deliveries.page(
                tenant_id, flt, before_seq=int_cursor(cursor), limit=limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].seq) if more else None)

    async def get(self, tenant_id: str, delivery_id: str) -> DeliveryWithAttempts:
        async with self.store.unit_of_work(write=False) as uow:
            delivery = await uow.deliveries.get(tenant_id, delivery_id)
            if delivery is None:
                raise NotFound(f"no delivery {delivery_id!r}")
            attempts = await uow.deliveries.attempts(tenant_id, delivery.seq)
        return DeliveryWithAttempts(delivery, attempts)

    async def retry(self, tenant_id: str, delivery_id: str) -> Delivery:
        """Send again now, with a fresh retry schedule."""
        now = self.clock.now_ms()
        async with self.store.unit_of_work() as uow:
            delivery = await uow.deliveries.get(tenant_id, delivery_id)
            if delivery is None:
                raise NotFound(f"no delivery {delivery_id!r}")
            endpoint = await uow.endpoints.get(tenant_id, delivery.endpoint_id)
            if endpoint is None:
                raise Conflict("the delivery's endpoint was deleted")
            if endpoint.disabled:
                raise EndpointDisabled("the endpoint is disabled; enable it first")
            if not await uow.deliveries.retry_now(tenant_id, delivery_id, now):
                raise DeliveryInFlight("the delivery is being sent right now; try again shortly")
            await uow.commit()
            delivery = await uow.deliveries.get(tenant_id, delivery_id) or delivery
        self.on_due()
        return delivery

    async def replay(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        scope: ReplayScope,
        since_ms: int | None,
        until_ms: int | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Make every matching delivery of the endpoint due now; return how many.

        Work goes in chunks of :data:`REPLAY_CHUNK`, one transaction each, so a replay of a
        million dead letters never holds a long lock; ``progress(done, total)`` follows it.
        """
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise ValidationFailed("until must be later than since", field="until")
        async with self.store.unit_of_work(write=False) as uow:
            endpoint = await uow.endpoints.get(tenant_id, endpoint_id)
            if endpoint is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            if endpoint.disabled:
                raise EndpointDisabled("the endpoint is disabled; enable it first")
            total = await uow.deliveries.count(
                tenant_id,
                endpoint_id,
                statuses=scope.statuses,
                since_ms=since_ms,
                until_ms=until_ms,
            )
        done, after = 0, None
        while True:
            async with self.store.unit_of_work() as uow:
                count, after = await uow.deliveries.replay(
                    tenant_id,
                    endpoint_id,
                    statuses=scope.statuses,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    now_ms=self.clock.now_ms(),
                    after_seq=after,
                    limit=REPLAY_CHUNK,
                )
                await uow.commit()
            if count == 0:
                break
            done += count
            self.on_due()
            if progress is not None:
                progress(done, max(total, done))
        return done
