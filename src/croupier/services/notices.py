"""croupier's own events: a tenant learns on its own endpoints, by the channel it already
reads, that a delivery died or that an endpoint was disabled."""

from __future__ import annotations

import hashlib

import orjson

from croupier.catalog import builtin_event_type
from croupier.domain.envelope import iso_ms, iso_ms_or_none
from croupier.domain.events import DELIVERY_DEAD, ENDPOINT_DISABLED, Event
from croupier.domain.ids import new_id
from croupier.services.ports import NewEvent, Outcome


def reports_death(outcome: Outcome) -> bool:
    """Whether a ``delivery.dead`` goes out for this outcome: the delivery died, and it did
    not itself carry a ``delivery.dead`` (which would feed on itself at a dead endpoint)."""
    return outcome.decision.status.value == "dead" and outcome.claim.event.type != DELIVERY_DEAD


def delivery_dead(outcome: Outcome, endpoint_url: str, now_ms: int) -> NewEvent:
    claim, result = outcome.claim, outcome.attempt.result
    return _notice(
        claim.event.tenant_id,
        DELIVERY_DEAD,
        {
            "delivery_id": claim.id,
            "event_id": claim.event.id,
            # Not ``event_type``: the flat data format sets that to the notice's own type.
            "dead_event_type": claim.event.type,
            "endpoint_id": claim.endpoint_id,
            "endpoint_url": endpoint_url,
            "attempts": outcome.attempt.number,
            "last_status_code": result.status_code,
            "last_error": result.error,
            "dead_at": iso_ms(now_ms),
        },
        ordering_key=claim.endpoint_id,
        trace_id=claim.event.trace_id,
        now_ms=now_ms,
    )


def endpoint_disabled(
    tenant_id: str,
    endpoint_id: str,
    endpoint_url: str,
    *,
    gone: bool,
    message: str,
    failing_since_ms: int | None,
    now_ms: int,
) -> NewEvent:
    return _notice(
        tenant_id,
        ENDPOINT_DISABLED,
        {
            "endpoint_id": endpoint_id,
            "endpoint_url": endpoint_url,
            "reason": "gone" if gone else "failing",
            "message": message,
            "failing_since": iso_ms_or_none(failing_since_ms),
            "disabled_at": iso_ms(now_ms),
        },
        ordering_key=endpoint_id,
        trace_id=None,
        now_ms=now_ms,
    )


def _notice(
    tenant_id: str,
    event_type: str,
    data: dict[str, object],
    *,
    ordering_key: str,
    trace_id: str | None,
    now_ms: int,
) -> NewEvent:
    shipped = builtin_event_type(event_type)
    assert shipped is not None, event_type
    data_json = orjson.dumps(data)
    return NewEvent(
        event=Event(
            id=new_id("evt", now_ms=now_ms),
            tenant_id=tenant_id,
            type=event_type,
            schema_version=shipped.schema_version,
            data_json=data_json,
            occurred_at_ms=now_ms,
            created_at_ms=now_ms,
            ordering_key=ordering_key,
            trace_id=trace_id,
        ),
        fingerprint=hashlib.sha256(data_json).hexdigest(),
        idempotency_key=None,
        delivery_count=0,
    )
