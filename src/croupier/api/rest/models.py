"""Request bodies (strict: unknown fields are refused) and how resources are rendered."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from croupier.domain.deliveries import Attempt, Delivery
from croupier.domain.endpoints import Endpoint
from croupier.domain.envelope import iso_ms, iso_ms_or_none
from croupier.domain.events import Event, EventType
from croupier.domain.tenants import ApiKey, Tenant


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


#: Text croupier stores as text: a NUL character is refused (PostgreSQL cannot store it).
Text = Annotated[StrictStr, AfterValidator(_no_nul)]


class Body(BaseModel):
    """Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class EndpointIn(Body):
    url: Text
    event_types: list[Text] | None = None
    secret: Text | None = None
    headers: dict[StrictStr, StrictStr] | None = None
    timeout_ms: StrictInt | None = None
    retry_schedule: list[StrictInt] | None = None
    ordered: StrictBool = False
    description: Text = ""
    disabled: StrictBool = False
    dialect: Text = "standard"
    header_prefix: Text = "Croupier"
    format: Text = "envelope"
    rate_limit_per_s: StrictFloat | StrictInt | None = None
    max_in_flight: StrictInt | None = None
    breaker: dict[StrictStr, Any] | None = None


class EndpointPatch(Body):
    url: Text | None = None
    event_types: list[Text] | None = None
    secret: Text | None = None
    headers: dict[StrictStr, StrictStr] | None = None
    timeout_ms: StrictInt | None = None
    retry_schedule: list[StrictInt] | None = None
    ordered: StrictBool | None = None
    description: Text | None = None
    disabled: StrictBool | None = None
    dialect: Text | None = None
    header_prefix: Text | None = None
    format: Text | None = None
    #: null sets these back to the default.
    rate_limit_per_s: StrictFloat | StrictInt | None = None
    max_in_flight: StrictInt | None = None
    breaker: dict[StrictStr, Any] | None = None


class EnableIn(Body):
    #: Send again what the endpoint missed: the deliveries that died since it began to
    #: fail, and the events of its types published while it was disabled.
    replay_missed: StrictBool = False


class RotateSecretIn(Body):
    grace_seconds: StrictInt = 86_400
    secret: Text | None = None


class EventIn(Body):
    id: Text | None = None
    type: Text
    data: dict[str, Any]
    ordering_key: Text | None = None
    occurred_at: Text | None = None


class EventTypeIn(Body):
    schema_: dict[str, Any] = Field(alias="schema")
    schema_version: Text = "1.0.0"
    description: Text = ""
    #: A non-core type is held back (stored, not sent) while the delivery backlog is over
    #: its threshold, so that the core types go first.
    core: StrictBool = True


class ReplayIn(Body):
    since: Text | None = None
    until: Text | None = None
    status: Text = "dead"


class TenantIn(Body):
    name: Text


class KeyIn(Body):
    name: Text = ""
    admin: StrictBool = False


def endpoint_out(e: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "event_types": list(e.event_types),
        "headers": dict(e.headers),
        "timeout_ms": e.timeout_ms,
        "retry_schedule": list(e.retry_schedule),
        "ordered": e.ordered,
        "dialect": e.dialect,
        "header_prefix": e.header_prefix,
        "format": e.format,
        "previous_secret_expires_at": (
            iso_ms(e.previous_secret_until_ms)
            if e.previous_secret is not None and e.previous_secret_until_ms is not None
            else None
        ),
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
        "disabled_at": iso_ms_or_none(e.disabled_at_ms),
        "rate_limit_per_s": e.rate_limit_per_s,
        "max_in_flight": e.max_in_flight,
        "breaker": breaker_out(e),
        "failing_since": iso_ms_or_none(e.failing_since_ms),
        "last_success_at": iso_ms_or_none(e.last_success_at_ms),
        "created_at": iso_ms(e.created_at_ms),
        "updated_at": iso_ms(e.updated_at_ms),
    }
    if with_secret:
        out["secret"] = e.secret
    return out


def breaker_out(e: Endpoint) -> dict[str, Any]:
    """The endpoint's circuit breaker: its settings, its state and its counters."""
    b = e.breaker
    return {
        **e.breaker_settings.to_json(),
        "state": b.state.value,
        # The run of failed attempts now (``consecutive_failures`` is the bound).
        "failures_in_a_row": b.consecutive_failures,
        "opened_at": iso_ms_or_none(b.opened_at_ms),
        # Open: when the next probe may go; half-open: when the probe's turn runs out.
        "until": iso_ms_or_none(b.until_ms),
    }


def event_out(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "schema_version": e.schema_version,
        "occurred_at": iso_ms(e.occurred_at_ms),
        "created_at": iso_ms(e.created_at_ms),
        "ordering_key": e.ordering_key,
        "trace_id": e.trace_id,
        "data": e.data,
    }


def event_type_out(t: EventType) -> dict[str, Any]:
    return {
        "name": t.name,
        "category": t.category,
        "description": t.description,
        "schema_version": t.schema_version,
        "default_subscription": t.default_subscription,
        "builtin": t.builtin,
        "core": t.core,
        "schema": t.schema,
        "examples": list(t.examples),
    }


def delivery_out(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "endpoint_id": d.endpoint_id,
        "status": d.status.value,
        "attempts": d.attempts,
        "next_attempt_at": iso_ms(d.next_attempt_at_ms) if d.next_attempt_at_ms else None,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "ordered_key": d.ordered_key,
        "created_at": iso_ms(d.created_at_ms),
        "updated_at": iso_ms(d.updated_at_ms),
    }


def attempt_out(a: Attempt) -> dict[str, Any]:
    r = a.result
    return {
        "id": a.id,
        "number": a.number,
        "started_at": iso_ms(r.started_at_ms),
        "duration_ms": r.duration_ms,
        "status_code": r.status_code,
        "succeeded": r.succeeded,
        "error": r.error,
        "request_headers": dict(a.request_headers),
        "response_headers": dict(r.response_headers),
        "response_body": r.response_body,
    }


def tenant_out(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "created_at": iso_ms(t.created_at_ms)}


def key_out(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "tenant_id": k.tenant_id,
        "name": k.name,
        "prefix": k.prefix,
        "admin": k.is_admin,
        "created_at": iso_ms(k.created_at_ms),
    }
