"""The body croupier posts: the envelope around an event's data."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import orjson

from croupier.domain.events import Event


def render_envelope(event: Event, *, attempt: int, delivered_at_ms: int, environment: str) -> bytes:
    """Serialise the envelope; the stored data bytes are embedded as they are, not re-encoded."""
    return orjson.dumps(
        {
            "id": event.id,
            "type": event.type,
            "schema_version": event.schema_version,
            "tenant_id": event.tenant_id,
            "occurred_at": iso_ms(event.occurred_at_ms),
            "delivered_at": iso_ms(delivered_at_ms),
            "data": orjson.Fragment(event.data_json),
            "meta": {"attempt": attempt, "environment": environment, "trace_id": event.trace_id},
        }
    )


def render_data(event: Event) -> bytes:
    """The ``data`` body format: the event's own fields posted flat, with ``event_type``
    (the shape some receivers were built for). Data that is not an object is posted as
    ``{"event_type": ..., "data": ...}``. croupier's ``event_type`` wins over a field of
    the same name in the data."""
    data = orjson.loads(event.data_json)
    if isinstance(data, dict):
        return orjson.dumps({**data, "event_type": event.type})
    return orjson.dumps({"event_type": event.type, "data": data})


def iso_ms(epoch_ms: int) -> str:
    """``2026-01-02T03:04:05.678Z``: ISO 8601 in UTC with milliseconds."""
    return _second_prefix(epoch_ms // 1000) + f"{epoch_ms % 1000:03d}Z"


def iso_ms_or_none(ms: int | None) -> str | None:
    """:func:`iso_ms`, or None for a time that is not there."""
    return None if ms is None else iso_ms(ms)


@functools.lru_cache(maxsize=4096)
def _second_prefix(epoch_s: int) -> str:
    # Thousands of deliveries share a second; formatting it once each is the hot path's due.
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def parse_iso(value: str) -> int:
    """Epoch milliseconds from an ISO 8601 string; a time without a zone is refused."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("timestamp must carry a time zone, e.g. 2026-01-02T03:04:05Z")
    ms = int(dt.timestamp() * 1000)
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValueError("timestamp must fall within the years 1 to 9999 in UTC")
    return ms


_MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)
