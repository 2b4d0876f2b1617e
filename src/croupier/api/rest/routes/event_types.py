"""The event catalog: shipped types and the tenant's own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import EventTypeIn, event_type_out

router = APIRouter(prefix="/v1/event-types", tags=["event types"])


@router.get("")
async def list_event_types(c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    types = await c.event_types.catalog(p.tenant_id)
    return {"data": [event_type_out(t) for t in types], "next_cursor": None}


@router.get("/{name}")
async def get_event_type(name: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    return event_type_out(await c.event_types.get(p.tenant_id, name))


@router.put("/{name}")
async def put_event_type(
    name: str, body: EventTypeIn, c: ContainerDep, p: PrincipalDep
) -> dict[str, Any]:
    """Create or replace one of the tenant's own types (shipped types are read-only)."""
    event_type = await c.event_types.put(
        p.tenant_id,
        name,
        schema=body.schema_,
        schema_version=body.schema_version,
        description=body.description,
        core=body.core,
    )
    return event_type_out(event_type)
