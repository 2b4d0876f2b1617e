"""Endpoints: where a tenant's events go."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import EndpointIn, EndpointPatch, ReplayIn, endpoint_out
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit, parse_time
from croupier.domain.errors import ValidationFailed
from croupier.services.deliveries import ReplayScope
from croupier.services.endpoints import EndpointSpec

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])


@router.post("", status_code=201)
async def create_endpoint(body: EndpointIn, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    """Create an endpoint. The answer carries its signing ``secret``."""
    endpoint = await c.endpoints.create(p.tenant_id, EndpointSpec(**body.model_dump()))
    return endpoint_out(endpoint, with_secret=True)


@router.get("")
async def list_endpoints(
    c: ContainerDep, p: PrincipalDep, limit: Limit = DEFAULT, cursor: Cursor = None
) -> dict[str, Any]:
    page = await c.endpoints.list(p.tenant_id, limit=limit, cursor=cursor)
    return {"data": [endpoint_out(e) for e in page.data], "next_cursor": page.next_cursor}


@router.get("/{endpoint_id}")
async def get_endpoint(endpoint_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    return endpoint_out(await c.endpoints.get(p.tenant_id, endpoint_id))


@router.patch("/{endpoint_id}")
async def update_endpoint(
    endpoint_id: str, body: EndpointPatch, c: ContainerDep, p: PrincipalDep
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    endpoint = await c.endpoints.update(p.tenant_id, endpoint_id, changes)
    if changes.get("disabled") is False:
        c.dispatcher.notify()
    return endpoint_out(endpoint)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, c: ContainerDep, p: PrincipalDep) -> Response:
    """Delete the endpoint; deliveries it had not received yet are cancelled."""
    await c.endpoints.delete(p.tenant_id, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/replay", status_code=202)
async def replay(
    endpoint_id: str, c: ContainerDep, p: PrincipalDep, body: ReplayIn | None = None
) -> dict[str, Any]:
    """Send again the endpoint's deliveries in ``[since, until)`` with the given status."""
    body = body or ReplayIn()
    try:
        scope = ReplayScope(body.status)
    except ValueError as exc:
        raise ValidationFailed("status must be dead, failed or all", field="status") from exc
    count = await c.deliveries.replay(
        p.tenant_id,
        endpoint_id,
        scope=scope,
        since_ms=parse_time(body.since, "since"),
        until_ms=parse_time(body.until, "until"),
    )
    return {"count": count}
