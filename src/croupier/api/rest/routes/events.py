"""Publishing events, and reading them back (the pull API)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from croupier.api.rest.context import current_trace_id
from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import EventIn, delivery_out, event_out
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit, parse_time
from croupier.services.publish import PublishRequest

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", status_code=202)
async def publish(
    body: EventIn,
    c: ContainerDep,
    p: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Accept an event; it and one delivery per subscribed endpoint are stored atomically.

    Publishing the same ``id`` (or ``Idempotency-Key``) with the same body again returns the
    first answer and creates nothing.
    """
    result = await c.publish.publish(
        p.tenant_id,
        PublishRequest(
            type=body.type,
            data=body.data,
            id=body.id,
            ordering_key=body.ordering_key,
            occurred_at_ms=parse_time(body.occurred_at, "occurred_at"),
            occurred_at_raw=body.occurred_at,
            idempotency_key=idempotency_key,
            trace_id=current_trace_id(),
        ),
    )
    return {"id": result.event.id, "type": result.event.type, "deliveries": result.deliveries}


@router.get("")
async def list_events(
    c: ContainerDep,
    p: PrincipalDep,
    type: str | None = None,
    since: str | None = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Events in publish order. ``next_cursor`` is null at the end; ``resume_cursor`` is
    always set, so a poller can come back later for what is new."""
    page = await c.publish.list(
        p.tenant_id,
        event_type=type,
        since_ms=parse_time(since, "since"),
        limit=limit,
        cursor=cursor,
    )
    return {
        "data": [event_out(e) for e in page.data],
        "next_cursor": page.next_cursor,
        "resume_cursor": page.resume_cursor,
    }


@router.get("/{event_id}")
async def get_event(event_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    found = await c.publish.get(p.tenant_id, event_id)
    return {**event_out(found.event), "deliveries": [delivery_out(d) for d in found.deliveries]}
