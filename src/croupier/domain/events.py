"""Events and event types as values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

SCHEMA_VERSION_DEFAULT = "1.0.0"


@dataclass(frozen=True)
class EventType:
    """A named kind of event with its JSON Schema and semantic ``schema_version``."""

    name: str
    schema: dict[str, Any]
    schema_version: str = SCHEMA_VERSION_DEFAULT
    description: str = ""
    category: str = "custom"
    default_subscription: bool = False
    builtin: bool = False
    #: Non-core types are paused (kept, not sent) while the delivery backlog is too long.
    core: bool = True
    examples: tuple[dict[str, Any], ...] = field(default=(), compare=False)


#: croupier's own events: they tell a tenant, on its own endpoints, what happened to its
#: deliveries and endpoints.
DELIVERY_DEAD = "delivery.dead"
ENDPOINT_DISABLED = "endpoint.disabled"


def is_money(event_type: str) -> bool:
    """Money events go before retries of others, and never wait behind a retry cap."""
    return event_type.startswith("wallet.")


@dataclass(frozen=True)
class Event:
    """One published occurrence. ``data_json`` holds the payload exactly as it is delivered."""

    id: str
    tenant_id: str
    type: str
    schema_version: str
    data_json: bytes
    occurred_at_ms: int
    created_at_ms: int
    ordering_key: str | None = None
    trace_id: str | None = None
    seq: int = 0

    @property
    def data(self) -> Any:
        return orjson.loads(self.data_json)


def fingerprint(type_: str, data: Any, ordering_key: str | None, occurred_at: str | None) -> str:
    """A digest of what a publisher asked for, to tell a replay from a different request.

    Only fields the publisher sent count: an omitted ``occurred_at`` stays omitted, so
    re-sending the same body matches even though the stored event got a time stamped on it.
    """
    canonical = orjson.dumps([type_, data, ordering_key, occurred_at], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
