from __future__ import annotations

import orjson
import pytest

from croupier.domain.envelope import iso_ms, parse_iso, render_envelope
from croupier.domain.events import Event, fingerprint


def event(data: bytes = b'{"roundId":"r1","amount":1.5}') -> Event:
    return Event(
        id="evt_1",
        tenant_id="default",
        type="round.completed",
        schema_version="1.0.0",
        data_json=data,
        occurred_at_ms=1_700_000_000_123,
        created_at_ms=1_700_000_000_200,
        trace_id="tr_a1b2",
    )


def test_the_envelope_has_exactly_the_documented_fields() -> None:
    body = orjson.loads(
        render_envelope(
            event(), attempt=3, delivered_at_ms=1_700_000_001_000, environment="sandbox"
        )
    )
    assert body == {
        "id": "evt_1",
        "type": "round.completed",
        "schema_version": "1.0.0",
        "tenant_id": "default",
        "occurred_at": "2023-11-14T22:13:20.123Z",
        "delivered_at": "2023-11-14T22:13:21.000Z",
        "data": {"roundId": "r1", "amount": 1.5},
        "meta": {"attempt": 3, "environment": "sandbox", "trace_id": "tr_a1b2"},
    }


def test_the_stored_data_bytes_are_embedded_unchanged() -> None:
    raw = b'{"b":1,"a":[1,2,{"z":null}]}'
    rendered = render_envelope(event(raw), attempt=1, delivered_at_ms=0, environment="production")
    assert b'"data":' + raw in rendered


def test_iso_times_round_trip_with_milliseconds() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_iso(iso_ms(1_700_000_000_123)) == 1_700_000_000_123
    assert parse_iso("2023-11-14T23:13:20.123+01:00") == 1_700_000_000_123


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_iso("2023-11-14T22:13:20")


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    a = fingerprint("t", {"x": 1, "y": 2}, None, None)
    assert a == fingerprint("t", {"y": 2, "x": 1}, None, None)
    assert a != fingerprint("t", {"x": 1, "y": 3}, None, None)
    assert a != fingerprint("t", {"x": 1, "y": 2}, "key", None)
    assert a != fingerprint("t", {"x": 1, "y": 2}, None, "2023-11-14T22:13:20Z")
