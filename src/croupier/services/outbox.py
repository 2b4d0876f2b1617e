"""The outbox: an event and one delivery per subscribed endpoint, written in the caller's
transaction. Publishing uses it, and so does the wallet, whose events are thereby stored
with the money that caused them or not at all; the dispatcher finds them in the table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from croupier.domain.events import Event
from croupier.domain.ids import new_id
from croupier.services.ports import NewDelivery, NewEvent, Subscriber, UnitOfWork


def append_events(
    uow: UnitOfWork, news: Sequence[NewEvent], now_ms: int
) -> list[tuple[Event, int]]:
    """Insert ``news`` (their ``delivery_count`` is filled in here) and their deliveries,
    due now; each stored event, with its ``seq``, and how many deliveries it got, in order."""
    if not news:
        return []
    # One read of each tenant's endpoints, whatever the number of types and events.
    tenants: dict[str, list[tuple[Subscriber, frozenset[str]]]] = {}
    subscribers: dict[tuple[str, str], list[Subscriber]] = {}
    for n in news:
        tenant_id, event_type = wanted = (n.event.tenant_id, n.event.type)
        if wanted not in subscribers:
            if tenant_id not in tenants:
                tenants[tenant_id] = uow.endpoints.subscriptions(tenant_id)
            subscribers[wanted] = [s for s, types in tenants[tenant_id] if event_type in types]
    seqs = uow.events.add_many(
        [
            dataclasses.replace(
                n, delivery_count=len(subscribers[(n.event.tenant_id, n.event.type)])
            )
            for n in news
        ]
    )
    stored: list[tuple[Event, int]] = []
    rows: list[tuple[Event, NewDelivery]] = []
    for n, seq in zip(news, seqs, strict=True):
        event = dataclasses.replace(n.event, seq=seq)
        endpoints = subscribers[(event.tenant_id, event.type)]
        stored.append((event, len(endpoints)))
        rows.extend(
            (
                event,
                NewDelivery(
                    id=new_id("dlv", now_ms=now_ms),
                    endpoint_id=e.id,
                    ordered_key=event.ordering_key if e.ordered else None,
                ),
            )
            for e in endpoints
        )
    uow.deliveries.add_many(rows, now_ms)
    return stored
