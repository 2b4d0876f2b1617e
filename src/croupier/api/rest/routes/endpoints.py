"""Endpoints: where a tenant's events go."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import (
    EnableIn,
    EndpointIn,
    EndpointPatch,
    ReplayIn,
    RotateSecretIn,
    endpoint_out,
)
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit, parse_time
from croupier.domain.envelope import iso_ms
from croupier.domain.errors import ValidationFailed
from croupier.domain.signing import public_key
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
    before = await c.endpoints.get(p.tenant_id, endpoint_id)
    endpoint = await c.endpoints.update(p.tenant_id, endpoint_id, changes)
    if changes.get("disabled") is False:
        c.dispatcher.notify()
    # A change of dialect that the old secret cannot sign in makes a new one: show it.
    made = "secret" not in changes and endpoint.secret != before.secret
    return endpoint_out(endpoint, with_secret=made)


@router.post("/{endpoint_id}/enable")
async def enable_endpoint(
    endpoint_id: str, c: ContainerDep, p: PrincipalDep, body: EnableIn | None = None
) -> dict[str, Any]:
    """Enable the endpoint again, with a clean health (breaker closed, no run of failures);
    with ``replay_missed``, also send it what it missed (see ``replay_missed``)."""
    body = body or EnableIn()
    before = await c.endpoints.get(p.tenant_id, endpoint_id)
    endpoint = await c.endpoints.update(p.tenant_id, endpoint_id, {"disabled": False})
    replayed = await c.deliveries.replay_missed(p.tenant_id, before) if body.replay_missed else 0
    c.dispatcher.notify()
    return {**endpoint_out(endpoint), "replayed": replayed}


@router.get("/{endpoint_id}/secret")
async def get_secret(endpoint_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    """The endpoint's secret; for ``ed25519`` also the ``public_key`` receivers verify with.
    During a rotation's grace window, the previous secret too, and until when it signs."""
    secret = await c.endpoints.secret(p.tenant_id, endpoint_id)
    out: dict[str, Any] = {"secret": secret.secret}
    if secret.public_key is not None:
        out["public_key"] = secret.public_key
    if secret.previous_secret is not None and secret.previous_secret_until_ms is not None:
        out["previous_secret"] = secret.previous_secret
        if secret.public_key is not None:
            out["previous_public_key"] = public_key(secret.previous_secret)
        out["previous_secret_expires_at"] = iso_ms(secret.previous_secret_until_ms)
    return out


@router.post("/{endpoint_id}/rotate-secret")
async def rotate_secret(
    endpoint_id: str, c: ContainerDep, p: PrincipalDep, body: RotateSecretIn | None = None
) -> dict[str, Any]:
    """A new secret; the current one keeps signing beside it for ``grace_seconds``."""
    body = body or RotateSecretIn()
    endpoint = await c.endpoints.rotate_secret(
        p.tenant_id, endpoint_id, grace_seconds=body.grace_seconds, secret=body.secret
    )
    return endpoint_out(endpoint, with_secret=True)


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
