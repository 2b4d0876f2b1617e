"""The verified event handed to receivers, and the reading of croupier's two body formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from croupier.receiver.errors import MissingHeaderError, PayloadError

_fast_loads: Callable[[bytes], Any] | None
try:
    # A faster parser where it is installed (croupier itself depends on it); the standard
    # library's otherwise. Verification is the receiver's hot path.
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

__all__ = ["Event", "EventFormat", "parse_event"]

EventFormat = Literal["envelope", "data"]


@dataclass(frozen=True)
class Event:
    """One verified delivery.

    ``id`` is the event id: the same on every retry and replay, so it is the key to drop
    duplicates by. ``data`` is the event's own fields; ``body`` is the whole parsed body as
    it arrived. The envelope-only fields (``occurred_at``, ``schema_version``, ``attempt``)
    are ``None`` when the endpoint receives the flat data format.
    """

    id: str
    type: str
    data: dict[str, Any]
    #: The signed ``webhook-timestamp`` (or ``X-...-Timestamp``); ``None`` for bearer.
    timestamp: int | None
    occurred_at: str | None
    schema_version: str | None
    attempt: int | None
    format: EventFormat
    body: dict[str, Any]


def parse_event(raw_body: bytes, *, header_id: str | None, timestamp: int | None) -> Event:
    """Read a body that has already passed the signature check.

    An object with ``id``, ``type`` and an object ``data`` is an envelope; otherwise an
    object with ``event_type`` is the flat data format, whose id comes from ``webhook-id``.
    """
    body = _loads(raw_body)
    if not isinstance(body, dict):
        raise PayloadError("body is not a JSON object")
    if "id" in body and "type" in body and isinstance(body.get("data"), dict):
        return _envelope(body, header_id=header_id, timestamp=timestamp)
    if "event_type" in body:
        return _flat(body, header_id=header_id, timestamp=timestamp)
    raise PayloadError(
        "body is neither an envelope (id, type, data) nor the data format (event_type)"
    )


def _envelope(body: dict[str, Any], *, header_id: str | None, timestamp: int | None) -> Event:
    event_id, event_type = body["id"], body["type"]
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError("envelope id is not a non-empty string")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("envelope type is not a non-empty string")
    if header_id is not None and header_id != event_id:
        # The id is the dedupe key: two different answers to "which event is this" must
        # not be resolved silently in favour of either.
        raise PayloadError("webhook-id does not match the envelope id")
    meta = body.get("meta")
    attempt = meta.get("attempt") if isinstance(meta, dict) else None
    return Event(
        id=event_id,
        type=event_type,
        data=body["data"],
        timestamp=timestamp,
        occurred_at=_str_or_none(body.get("occurred_at")),
        schema_version=_str_or_none(body.get("schema_version")),
        # bool is an int subclass; a true/false attempt count is noise, not a number.
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        format="envelope",
        body=body,
    )


def _flat(body: dict[str, Any], *, header_id: str | None, timestamp: int | None) -> Event:
    event_type = body["event_type"]
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("event_type is not a non-empty string")
    if header_id is None:
        # The flat format carries no id of its own.
        raise MissingHeaderError("webhook-id")
    return Event(
        id=header_id,
        type=event_type,
        data={k: v for k, v in body.items() if k != "event_type"},
        timestamp=timestamp,
        occurred_at=None,
        schema_version=None,
        attempt=None,
        format="data",
        body=body,
    )


def _loads(raw_body: bytes) -> Any:
    if _fast_loads is not None:
        try:
            return _fast_loads(raw_body)
        except ValueError:
            pass  # integers past 64 bits, say: let the standard parser have the last word
    try:
        return json.loads(raw_body)
    except (ValueError, RecursionError):
        # UnicodeDecodeError is a ValueError; deep nesting is RecursionError.
        raise PayloadError("body is not valid JSON") from None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
