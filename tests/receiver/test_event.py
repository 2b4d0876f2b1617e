"""Reading the two body formats into an Event, once the signature is good."""

from __future__ import annotations

import dataclasses
import json

import pytest

from croupier.receiver import Event, MissingHeaderError, PayloadError, Verifier
from croupier.receiver.testing import sign
from tests.receiver.support import EVENT_ID, NOW, SECRET, Clock, round_completed_body


def verify(body: bytes, clock: Clock, *, msg_id: str = EVENT_ID) -> Event:
    headers = sign("standard", SECRET, body, msg_id=msg_id, timestamp=NOW)
    return Verifier("standard", SECRET, now=clock).verify(headers, body)


def test_the_flat_data_format_takes_its_id_from_webhook_id_and_drops_event_type(
    clock: Clock,
) -> None:
    body = b'{"campaign_id":"c1","player_id":"p1","event_type":"PRIZE_PAYOUT_CREATED"}'
    event = verify(body, clock)
    assert event.format == "data"
    assert event.id == EVENT_ID
    assert event.type == "PRIZE_PAYOUT_CREATED"
    assert event.data == {"campaign_id": "c1", "player_id": "p1"}
    assert event.body == json.loads(body)
    assert (event.occurred_at, event.schema_version, event.attempt) == (None, None, None)


def test_an_envelope_is_recognised_by_id_type_and_an_object_data(clock: Clock) -> None:
    event = verify(round_completed_body(attempt=2), clock)
    assert event.format == "envelope"
    assert event.attempt == 2


def test_an_object_with_a_non_object_data_and_an_event_type_is_the_flat_format(
    clock: Clock,
) -> None:
    body = b'{"id":"x","type":"t","data":"text","event_type":"custom.type"}'
    event = verify(body, clock)
    assert event.format == "data"
    assert event.type == "custom.type"


def test_an_envelope_whose_id_differs_from_webhook_id_is_refused(clock: Clock) -> None:
    with pytest.raises(PayloadError, match="webhook-id does not match the envelope id"):
        verify(round_completed_body("evt_body"), clock, msg_id="evt_header")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"hello": "world"}', "neither an envelope"),
        (b'{"id": 1, "type": "t", "data": {}}', "envelope id is not a non-empty string"),
        (b'{"id": "e", "type": null, "data": {}}', "envelope type is not a non-empty string"),
        (b'{"event_type": 7}', "event_type is not a non-empty string"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_a_signed_body_of_the_wrong_shape_is_a_payload_error(
    clock: Clock, body: bytes, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        verify(body, clock)


def test_odd_meta_values_read_as_unknown(clock: Clock) -> None:
    body = json.dumps(
        {"id": EVENT_ID, "type": "t", "data": {}, "meta": {"attempt": True}, "occurred_at": 5}
    ).encode()
    event = verify(body, clock)
    assert (event.attempt, event.occurred_at, event.schema_version) == (None, None, None)


def test_events_are_immutable(clock: Clock) -> None:
    event = verify(round_completed_body(), clock)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "other"  # type: ignore[misc]


def test_the_flat_format_needs_an_id_from_somewhere() -> None:
    # Bearer requests carry no signed id; the flat body has none: nothing to dedupe by.
    verifier = Verifier("bearer", "api_key_123")
    with pytest.raises(MissingHeaderError, match="missing header webhook-id"):
        verifier.verify({"Authorization": "Bearer api_key_123"}, b'{"event_type": "x"}')
