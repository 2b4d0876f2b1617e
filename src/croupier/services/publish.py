"""Publishing: one transaction writes the event and a delivery per subscribed endpoint."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from croupier.domain.clock import Clock
from croupier.domain.deliveries import Delivery
from croupier.domain.errors import (
    ConcurrentWrite,
    IdempotencyMismatch,
    NotFound,
    SchemaViolation,
    UnknownEventType,
    ValidationFailed,
)
from croupier.domain.events import Event, fingerprint
from croupier.domain.ids import new_id
from croupier.services.event_types import EventTypeService
from croupier.services.outbox import append_events
from croupier.services.pagination import Page, check_limit, encode_cursor, int_cursor
from croupier.services.ports import (
    DeliveryFilter,
    NewEvent,
    Store,
    StoredEvent,
    UnitOfWork,
)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
#: Most publishes one transaction carries.
_BATCH = 500


@dataclass(frozen=True)
class PublishRequest:
    type: str
    data: Any
    id: str | None = None
    ordering_key: str | None = None
    occurred_at_ms: int | None = None
    #: ``occurred_at`` exactly as sent, so a replay is recognised byte for byte.
    occurred_at_raw: str | None = None
    idempotency_key: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class PublishResult:
    event: Event
    deliveries: int
    #: True when this call repeated an earlier one and created nothing.
    replayed: bool


@dataclass(frozen=True)
class EventPage(Page[Event]):
    """A page of the pull API. ``resume_cursor`` is set even on the last page, so a poller
    can come back later and receive only what was published since."""

    resume_cursor: str | None


@dataclass(frozen=True)
class EventWithDeliveries:
    event: Event
    deliveries: list[Delivery]


class PublishService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        event_types: EventTypeService,
        on_published: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.event_types = event_types
        self.on_published = on_published
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def publish(self, tenant_id: str, req: PublishRequest) -> PublishResult:
        """Validate, then store the event and its deliveries atomically; idempotent on id/key."""
        for name, value in (("id", req.id), ("ordering_key", req.ordering_key)):
            if value is not None and not _ID.match(value):
                raise ValidationFailed(
                    f"{name} must be 1-200 characters of letters, digits, '_', '.', ':' or '-'",
                    field=name,
                )
        if req.idempotency_key is not None and not 1 <= len(req.idempotency_key) <= 200:
            raise ValidationFailed(
                "Idempotency-Key must be 1-200 characters", field="Idempotency-Key"
            )
        digest = fingerprint(req.type, req.data, req.ordering_key, req.occurred_at_raw)
        try:
            event_type = await self.event_types.validate(tenant_id, req.type, req.data)
        except (UnknownEventType, SchemaViolation):
            # A replay answers as the first publish did, even if its type has changed
            # since. Only a refused publish looks first: an accepted one finds out in its
            # write batch, which checks every id and key anyway, so the common case costs
            # no read of its own.
            first = await self._find(tenant_id, req)
            if first is not None:
                return _replay(first, digest, req)
            raise
        now = self.clock.now_ms()
        event = Event(
            id=req.id or new_id("evt", now_ms=now),
            tenant_id=tenant_id,
            type=req.type,
            schema_version=event_type.schema_version,
            data_json=orjson.dumps(req.data),
            ordering_key=req.ordering_key,
            occurred_at_ms=req.occurred_at_ms if req.occurred_at_ms is not None else now,
            created_at_ms=now,
            trace_id=req.trace_id,
        )
        pending = _Pending(tenant_id, event, digest, req)
        self._queue.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await asyncio.shield(pending.result)

    async def _write_queued(self) -> None:
        """Group commit: whatever queued up while the last transaction ran goes in the next.

        At rest a publish writes alone and at once; under load hundreds share one
        transaction, so the per-transaction cost stops bounding the publish rate.
        """
        while self._queue:
            batch = self._queue[:_BATCH]
            del self._queue[: len(batch)]
            try:
                await self._write(batch)
            except ConcurrentWrite:
                # Another process took an id or key of this batch meanwhile: write them one
                # by one, so only the colliding publish turns into a replay.
                for one in batch:
                    await self._write_alone(one)
            except Exception as exc:
                for p in batch:
                    if not p.result.done():
                        p.result.set_exception(exc)

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            await self._write([pending])
        except ConcurrentWrite:
            await self._settle_replay(pending)
        except Exception as exc:
            pending.result.set_exception(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        """Store the events of ``batch`` and their deliveries in one transaction."""
        stored = await self.store.run(functools.partial(_store_batch, batch, self.clock.now_ms()))
        for p, event, count in stored.written:
            p.result.set_result(PublishResult(event, count, replayed=False))
        if any(count for _, _, count in stored.written):
            self.on_published()
        for p in stored.repeats:
            await self._settle_replay(p)

    async def _settle_replay(self, pending: _Pending) -> None:
        """Answer a publish whose id or key was already taken, as the first answer."""
        try:
            winner = await self._find(pending.tenant_id, pending.req)
            if winner is None:
                raise IdempotencyMismatch("the event id is being published concurrently")
            pending.result.set_result(_replay(winner, pending.digest, pending.req))
        except Exception as exc:
            pending.result.set_exception(exc)

    async def list(
        self,
        tenant_id: str,
        *,
        event_type: str | None,
        since_ms: int | None,
        limit: int,
        cursor: str | None,
    ) -> EventPage:
        """Events in the order croupier accepted them: the pull API to catch up from a cursor."""
        check_limit(limit)
        after = int_cursor(cursor)
        rows = await self.store.run(
            lambda uow: uow.events.page(
                tenant_id,
                event_type=event_type,
                since_ms=since_ms,
                after_seq=after,
                limit=limit + 1,
            ),
            write=False,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        resume = encode_cursor(rows[-1].seq) if rows else cursor
        return EventPage(rows, resume if more else None, resume)

    async def get(self, tenant_id: str, event_id: str) -> EventWithDeliveries:

        def work(uow: UnitOfWork) -> EventWithDeliveries:
            event = uow.events.get(tenant_id, event_id)
            if event is None:
                raise NotFound(f"no event {event_id!r}")
            deliveries = uow.deliveries.page(
                tenant_id, DeliveryFilter(event_id=event_id), before_seq=None, limit=1000
            )
            return EventWithDeliveries(event, deliveries)

        return await self.store.run(work, write=False)

    async def _find(self, tenant_id: str, req: PublishRequest) -> StoredEvent | None:
        if req.id is None and req.idempotency_key is None:
            return None
        return await self.store.run(
            lambda uow: uow.events.find(
                tenant_id, event_id=req.id, idempotency_key=req.idempotency_key
            ),
            write=False,
        )


@dataclass
class _Pending:
    """A validated publish waiting for the writer."""

    tenant_id: str
    event: Event
    digest: str
    req: PublishRequest
    result: asyncio.Future[PublishResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Stored:
    written: list[tuple[_Pending, Event, int]]
    repeats: list[_Pending]


def _store_batch(batch: list[_Pending], now: int, uow: UnitOfWork) -> _Stored:
    """The transaction of a publish batch. It runs where the store does its I/O, so it
    touches only the unit of work and plain values, never the callers' futures."""
    fresh: list[_Pending] = []
    repeats: list[_Pending] = []
    claimed: set[tuple[str, str, str]] = set()
    for tenant_id in {p.tenant_id for p in batch}:
        mine = [p for p in batch if p.tenant_id == tenant_id]
        ids, keys = uow.events.taken(
            tenant_id,
            # An id croupier minted is new by construction; only a caller's can repeat.
            ids=[p.event.id for p in mine if p.req.id is not None],
            idempotency_keys=[k for p in mine if (k := p.req.idempotency_key)],
        )
        claimed |= {(tenant_id, "id", i) for i in ids}
        claimed |= {(tenant_id, "key", k) for k in keys}
    for p in batch:
        names = {(p.tenant_id, "id", p.event.id)}
        if p.req.idempotency_key is not None:
            names.add((p.tenant_id, "key", p.req.idempotency_key))
        if names & claimed:
            repeats.append(p)  # published before, or earlier in this very batch
            continue
        claimed |= names
        fresh.append(p)
    stored = append_events(
        uow,
        [
            NewEvent(
                event=p.event,
                fingerprint=p.digest,
                idempotency_key=p.req.idempotency_key,
                delivery_count=0,
            )
            for p in fresh
        ],
        now,
    )
    written = [(p, event, count) for p, (event, count) in zip(fresh, stored, strict=True)]
    return _Stored(written, repeats)


def _replay(first: StoredEvent, digest: str, req: PublishRequest) -> PublishResult:
    if req.id is not None and first.event.id != req.id:
        raise IdempotencyMismatch(
            f"Idempotency-Key {req.idempotency_key!r} already belongs to event {first.event.id!r}"
        )
    if first.fingerprint != digest:
        raise IdempotencyMismatch(
            f"event {first.event.id!r} was already published with a different body"
        )
    return PublishResult(first.event, first.delivery_count, replayed=True)
