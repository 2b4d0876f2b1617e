"""Deliveries, their attempts, and retrying one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import attempt_out, delivery_out
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit, parse_time
from croupier.domain.deliveries import DeliveryStatus
from croupier.domain.errors import ValidationFailed
from croupier.services.ports import DeliveryFilter

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


@router.get("")
async def list_deliveries(
    c: ContainerDep,
    p: PrincipalDep,
    endpoint_id: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    since: str | None = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Newest first. ``status=dead`` lists the dead letter queue."""
    try:
        wanted = DeliveryStatus(status) if status is not None else None
    except ValueError as exc:
        choices = ", ".join(s.value for s in DeliveryStatus)
        raise ValidationFailed(f"status must be one of {choices}", field="status") from exc
    page = await c.deliveries.list(
        p.tenant_id,
        DeliveryFilter(
            endpoint_id=endpoint_id,
            status=wanted,
            event_type=event_type,
            since_ms=parse_time(since, "since"),
        ),
        limit=limit,
        cursor=cursor,
    )
    return {"data": [delivery_out(d) for d in page.data], "next_cursor": page.next_cursor}


@router.get("/{delivery_id}")
async def get_delivery(delivery_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    found = await c.deliveries.get(p.tenant_id, delivery_id)
    return {
        **delivery_out(found.delivery),
        "attempt_log": [attempt_out(a) for a in found.attempts],
    }


@router.post("/{delivery_id}/retry", status_code=202)
async def retry_delivery(delivery_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    """Send it again now, with a fresh retry schedule."""
    return delivery_out(await c.deliveries.retry(p.tenant_id, delivery_id))
