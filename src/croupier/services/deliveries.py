"""Reading deliveries and their attempts; retrying one; replaying an endpoint's window."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from croupier.domain.clock import Clock
from croupier.domain.deliveries import Attempt, Delivery, DeliveryStatus
from croupier.domain.endpoints import Endpoint
from croupier.domain.errors import (
    Conflict,
    DeliveryInFlight,
    EndpointDisabled,
    NotFound,
    ValidationFailed,
)
from croupier.services.pagination import Page, check_limit, encode_cursor, int_cursor
from croupier.services.ports import DeliveryFilter, Store, UnitOfWork

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
        before = int_cursor(cursor)
        rows = await self.store.run(
            lambda uow: uow.deliveries.page(tenant_id, flt, before_seq=before, limit=limit + 1),
            write=False,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].seq) if more else None)

    async def get(self, tenant_id: str, delivery_id: str) -> DeliveryWithAttempts:

        def work(uow: UnitOfWork) -> DeliveryWithAttempts:
            delivery = uow.deliveries.get(tenant_id, delivery_id)
            if delivery is None:
                raise NotFound(f"no delivery {delivery_id!r}")
            return DeliveryWithAttempts(delivery, uow.deliveries.attempts(tenant_id, delivery.seq))

        return await self.store.run(work, write=False)

    async def retry(self, tenant_id: str, delivery_id: str) -> Delivery:
        """Send again now, with a fresh retry schedule."""
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> Delivery:
            delivery = uow.deliveries.get(tenant_id, delivery_id)
            if delivery is None:
                raise NotFound(f"no delivery {delivery_id!r}")
            endpoint = uow.endpoints.get(tenant_id, delivery.endpoint_id)
            if endpoint is None:
                raise Conflict("the delivery's endpoint was deleted")
            if endpoint.disabled:
                raise EndpointDisabled("the endpoint is disabled; enable it first")
            if not uow.deliveries.retry_now(tenant_id, delivery_id, now):
                raise DeliveryInFlight("the delivery is being sent right now; try again shortly")
            return uow.deliveries.get(tenant_id, delivery_id) or delivery

        delivery = await self.store.run(work)
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

        def matching(uow: UnitOfWork) -> int:
            endpoint = uow.endpoints.get(tenant_id, endpoint_id)
            if endpoint is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            if endpoint.disabled:
                raise EndpointDisabled("the endpoint is disabled; enable it first")
            return uow.deliveries.count(
                tenant_id,
                endpoint_id,
                statuses=scope.statuses,
                since_ms=since_ms,
                until_ms=until_ms,
            )

        def chunk(after: int | None, now: int, uow: UnitOfWork) -> tuple[int, int | None]:
            return uow.deliveries.replay(
                tenant_id,
                endpoint_id,
                statuses=scope.statuses,
                since_ms=since_ms,
                until_ms=until_ms,
                now_ms=now,
                after_seq=after,
                limit=REPLAY_CHUNK,
            )

        total = await self.store.run(matching, write=False)
        done, after = 0, None
        while True:
            count, after = await self.store.run(
                functools.partial(chunk, after, self.clock.now_ms())
            )
            if count == 0:
                break
            done += count
            self.on_due()
            if progress is not None:
                progress(done, max(total, done))
        return done

    async def replay_missed(self, tenant_id: str, before: Endpoint) -> int:
        """Send an endpoint that is enabled again what it missed, as it was before
        (``before``): its deliveries that died since it began to fail, and a delivery of
        each event of its types published while it was disabled. Returns how many."""
        died_since = before.failing_since_ms or before.disabled_at_ms
        done = 0
        if died_since is not None:
            done += await self._chunks(
                lambda after, now, uow: uow.deliveries.revive_dead(
                    tenant_id,
                    before.id,
                    died_since_ms=died_since,
                    now_ms=now,
                    after_seq=after,
                    limit=REPLAY_CHUNK,
                )
            )
        if before.disabled_at_ms is not None:
            done += await self._chunks(
                lambda after, now, uow: uow.deliveries.backfill(
                    tenant_id,
                    before.id,
                    before.event_types,
                    ordered=before.ordered,
                    since_ms=before.disabled_at_ms or 0,
                    now_ms=now,
                    after_seq=after,
                    limit=REPLAY_CHUNK,
                )
            )
        return done

    async def _chunks(
        self, chunk: Callable[[int | None, int, UnitOfWork], tuple[int, int | None]]
    ) -> int:
        """Run ``chunk`` (after, now, uow) -> (count, last) until it has no more, one
        transaction each."""
        done, after = 0, None
        while True:
            count, after = await self.store.run(
                functools.partial(chunk, after, self.clock.now_ms())
            )
            done += count
            if count:
                self.on_due()
            if after is None:
                return done
