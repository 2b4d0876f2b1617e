"""Endpoints: create, read, change, delete, all within one tenant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croupier.catalog import DEFAULT_SUBSCRIPTIONS
from croupier.domain.clock import Clock
from croupier.domain.endpoints import (
    DEFAULT_TIMEOUT_MS,
    Endpoint,
    validate_headers,
    validate_timeout,
    validate_url,
)
from croupier.domain.errors import NotFound, ValidationFailed
from croupier.domain.ids import new_id
from croupier.domain.retry import DEFAULT_SCHEDULE, validate_schedule
from croupier.domain.signing import DIALECTS, generate_secret, validate_secret
from croupier.services.event_types import EventTypeService
from croupier.services.pagination import Page, check_limit, encode_cursor, str_cursor
from croupier.services.ports import Store, UnitOfWork

MAX_EVENT_TYPES = 200


@dataclass(frozen=True)
class EndpointSpec:
    """What a caller may set on an endpoint; None means "the default" on create."""

    url: str
    event_types: Sequence[str] | None = None
    secret: str | None = None
    headers: Mapping[str, str] | None = None
    timeout_ms: int | None = None
    retry_schedule: Sequence[int] | None = None
    ordered: bool = False
    description: str = ""
    disabled: bool = False
    dialect: str = "standard"


#: Fields PATCH may change.
MUTABLE_FIELDS = frozenset(
    {
        "url",
        "event_types",
        "secret",
        "headers",
        "timeout_ms",
        "retry_schedule",
        "ordered",
        "description",
        "disabled",
        "dialect",
    }
)


class EndpointService:
    def __init__(self, store: Store, clock: Clock, event_types: EventTypeService) -> None:
        self.store = store
        self.clock = clock
        self.event_types = event_types

    async def create(self, tenant_id: str, spec: EndpointSpec) -> Endpoint:
        now = self.clock.now_ms()
        endpoint = Endpoint(
            id=new_id("ep"),
            tenant_id=tenant_id,
            url=validate_url(spec.url),
            secret=validate_secret(spec.secret) if spec.secret is not None else generate_secret(),
            event_types=await self._subscriptions(tenant_id, spec.event_types),
            headers=validate_headers(spec.headers or {}),
            timeout_ms=validate_timeout(
                spec.timeout_ms if spec.timeout_ms is not None else DEFAULT_TIMEOUT_MS
            ),
            retry_schedule=validate_schedule(
                spec.retry_schedule if spec.retry_schedule is not None else DEFAULT_SCHEDULE
            ),
            ordered=spec.ordered,
            description=_description(spec.description),
            disabled=spec.disabled,
            disabled_reason="disabled by request" if spec.disabled else None,
            dialect=_dialect(spec.dialect),
            created_at_ms=now,
            updated_at_ms=now,
        )
        await self.store.run(lambda uow: uow.endpoints.add(endpoint))
        return endpoint

    async def get(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        endpoint = await self.store.run(
            lambda uow: uow.endpoints.get(tenant_id, endpoint_id), write=False
        )
        if endpoint is None:
            raise NotFound(f"no endpoint {endpoint_id!r}")
        return endpoint

    async def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Endpoint]:
        check_limit(limit)
        after = str_cursor(cursor)
        rows = await self.store.run(
            lambda uow: uow.endpoints.page(tenant_id, limit=limit + 1, after=after), write=False
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more else None)

    async def update(
        self, tenant_id: str, endpoint_id: str, changes: Mapping[str, Any]
    ) -> Endpoint:
        """Apply a partial change; fields not in ``changes`` keep their value."""
        unknown = set(changes) - MUTABLE_FIELDS
        if unknown:
            raise ValidationFailed(f"cannot change {sorted(unknown)}", field=sorted(unknown)[0])
        fields: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None and name not in ("event_types",):
                raise ValidationFailed(f"{name} cannot be null", field=name)
            fields[name] = value
        if "url" in fields:
            fields["url"] = validate_url(fields["url"])
        if "secret" in fields:
            fields["secret"] = validate_secret(fields["secret"])
        if "event_types" in fields:
            fields["event_types"] = await self._subscriptions(tenant_id, fields["event_types"])
        if "headers" in fields:
            fields["headers"] = validate_headers(fields["headers"])
        if "timeout_ms" in fields:
            fields["timeout_ms"] = validate_timeout(fields["timeout_ms"])
        if "retry_schedule" in fields:
            fields["retry_schedule"] = validate_schedule(fields["retry_schedule"])
        if "description" in fields:
            fields["description"] = _description(fields["description"])
        if "dialect" in fields:
            fields["dialect"] = _dialect(fields["dialect"])
        if "disabled" in fields:
            fields["disabled_reason"] = "disabled by request" if fields["disabled"] else None
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> Endpoint:
            current = uow.endpoints.get(tenant_id, endpoint_id)
            if current is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            updated = dataclasses.replace(
                current, **fields, updated_at_ms=now, version=current.version + 1
            )
            uow.endpoints.update(updated)
            return updated

        return await self.store.run(work)

    async def delete(self, tenant_id: str, endpoint_id: str) -> int:
        """Delete the endpoint and cancel what it still had to receive; return that count."""
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> int:
            if uow.endpoints.get(tenant_id, endpoint_id) is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            uow.endpoints.delete(tenant_id, endpoint_id, now)
            return uow.deliveries.cancel_open(tenant_id, endpoint_id, now)

        return await self.store.run(work)

    async def tenant_of(self, endpoint_id: str) -> str:
        """Whose endpoint this is; only operator tools with database access ask this."""
        tenant_id = await self.store.run(
            lambda uow: uow.endpoints.tenant_of(endpoint_id), write=False
        )
        if tenant_id is None:
            raise NotFound(f"no endpoint {endpoint_id!r}")
        return tenant_id

    async def _subscriptions(
        self, tenant_id: str, event_types: Sequence[str] | None
    ) -> tuple[str, ...]:
        if event_types is None:
            return DEFAULT_SUBSCRIPTIONS
        if not event_types:
            raise ValidationFailed("event_types must name at least one type", field="event_types")
        if len(event_types) > MAX_EVENT_TYPES:
            raise ValidationFailed(
                f"at most {MAX_EVENT_TYPES} event types per endpoint", field="event_types"
            )
        names = tuple(dict.fromkeys(event_types))
        for i, name in enumerate(names):
            if await self.event_types.find(tenant_id, name) is None:
                raise ValidationFailed(f"unknown event type {name!r}", field=f"event_types.{i}")
        return names


def _description(text: str) -> str:
    if len(text) > 1000:
        raise ValidationFailed("description is longer than 1000 characters", field="description")
    return text


def _dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValidationFailed(f"dialect must be one of {list(DIALECTS)}", field="dialect")
    return dialect
