"""Tenants and API keys (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import KeyIn, TenantIn, key_out, tenant_out
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201)
async def create_tenant(body: TenantIn, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    return tenant_out(await c.tenants.create_tenant(p, body.name))


@router.get("")
async def list_tenants(
    c: ContainerDep, p: PrincipalDep, limit: Limit = DEFAULT, cursor: Cursor = None
) -> dict[str, Any]:
    page = await c.tenants.list_tenants(p, limit=limit, cursor=cursor)
    return {"data": [tenant_out(t) for t in page.data], "next_cursor": page.next_cursor}


@router.post("/{tenant_id}/keys", status_code=201)
async def create_key(
    tenant_id: str, c: ContainerDep, p: PrincipalDep, body: KeyIn | None = None
) -> dict[str, Any]:
    """A new API key for the tenant; ``key`` is shown in this answer only."""
    body = body or KeyIn()
    issued = await c.tenants.create_key(p, tenant_id, name=body.name, admin=body.admin)
    return {**key_out(issued.key), "key": issued.secret}
