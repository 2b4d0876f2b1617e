"""Publishing through the REST API: fan-out, idempotency, validation, limits, trace ids, and
nothing half-written when a publish is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from tests.integration.conftest import (
    OPT_IN,
    assert_error,
    create_endpoint,
    example,
    get_json,
    iso,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Receiver

HOOK = "https://hooks.example.com/in"
LIMIT = 256 * 1024


async def count_events_and_deliveries(client: httpx.AsyncClient) -> tuple[int, int]:
    return (
        len(await list_all(client, "/v1/events")),
        len(await list_all(client, "/v1/deliveries")),
    )


def body_of_size(size: int) -> bytes:
    """A valid PLAYER_OPTED_IN publish body of exactly ``size`` bytes."""
    head = b'{"type":"PLAYER_OPTED_IN","data":{"player_id":"p1","campaign_id":"c1",'
    head += b'"event_type":"PLAYER_OPTED_IN","pad":"'
    tail = b'"}}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    orjson.loads(body)
    return body


# -- the answer and the fan-out -----------------------------------------------------------


async def test_a_publish_answers_202_with_the_id_the_type_and_the_number_of_deliveries(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, f"{HOOK}/1")
    await create_endpoint(client, f"{HOOK}/2")
    r = await client.post(
        "/v1/events", json={"id": "evt-given-1", "type": OPT_IN, "data": opt_in()}
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"id": "evt-given-1", "type": OPT_IN, "deliveries": 2}


async def test_an_event_without_an_id_gets_one_starting_with_evt(
    client: httpx.AsyncClient,
) -> None:
    first = await publish(client)
    second = await publish(client)
    assert first["id"].startswith("evt_")
    assert second["id"].startswith("evt_")
    assert first["id"] != second["id"]
    stored = await get_json(client, f"/v1/events/{first['id']}")
    assert stored["data"] == opt_in()


async def test_only_enabled_endpoints_subscribed_to_the_type_get_a_delivery(
    client: httpx.AsyncClient,
) -> None:
    wanted = await create_endpoint(client, f"{HOOK}/wanted")
    await create_endpoint(client, f"{HOOK}/disabled", disabled=True)
    await create_endpoint(client, f"{HOOK}/other-type", event_types=["round.completed"])
    await create_endpoint(client, f"{HOOK}/defaults", event_types=None)
    deleted = await create_endpoint(client, f"{HOOK}/deleted")
    paused = await create_endpoint(client, f"{HOOK}/paused")
    await client.delete(f"/v1/endpoints/{deleted['id']}")
    await client.patch(f"/v1/endpoints/{paused['id']}", json={"disabled": True})

    answer = await publish(client)

    assert answer["deliveries"] == 1
    event = await get_json(client, f"/v1/events/{answer['id']}")
    assert [d["endpoint_id"] for d in event["deliveries"]] == [wanted["id"]]
    assert [d["endpoint_id"] for d in await list_all(client, "/v1/deliveries")] == [wanted["id"]]


async def test_a_default_subscription_receives_its_types_without_asking(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/endpoints", json={"url": HOOK})
    assert (await publish(client, "round.completed"))["deliveries"] == 1
    assert (await publish(client, "player.limit_reached"))["deliveries"] == 1
    assert (await publish(client, OPT_IN))["deliveries"] == 0


async def test_an_event_nobody_subscribes_to_is_stored_with_no_deliveries(
    client: httpx.AsyncClient,
) -> None:
    answer = await publish(client)
    assert answer["deliveries"] == 0
    stored = await get_json(client, f"/v1/events/{answer['id']}")
    assert stored["deliveries"] == []
    assert await count_events_and_deliveries(client) == (1, 0)


async def test_the_published_event_is_stored_as_sent(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    answer = await publish(
        client,
        data=opt_in("p9", extra={"nested": [1, 2.5, None]}),
        ordering_key="player-9",
        occurred_at="2026-01-02T05:04:05+02:00",
    )
    stored = await get_json(client, f"/v1/events/{answer['id']}")
    assert stored["type"] == OPT_IN
    assert stored["data"] == opt_in("p9", extra={"nested": [1, 2.5, None]})
    assert stored["ordering_key"] == "player-9"
    assert stored["occurred_at"] == "2026-01-02T03:04:05.000Z"
    assert stored["created_at"] == iso(clock)
    assert stored["schema_version"] == "1.0.0"


async def test_occurred_at_defaults_to_the_time_of_publishing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    answer = await publish(client)
    stored = await get_json(client, f"/v1/events/{answer['id']}")
    assert stored["occurred_at"] == iso(clock)


async def test_the_receiver_gets_the_data_exactly_as_published(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await create_endpoint(client, receiver.url(), event_types=["round.completed"])
    data = example("round.completed")
    answer = await publish(client, "round.completed", data)
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    envelope = orjson.loads(req.body)
    assert envelope["id"] == answer["id"]
    assert envelope["type"] == "round.completed"
    assert envelope["data"] == data


# -- idempotency --------------------------------------------------------------------------


async def test_the_same_id_and_body_again_returns_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await create_endpoint(client, receiver.url())
    body = {"id": "evt-42", "type": OPT_IN, "data": opt_in()}
    first = await client.post("/v1/events", json=body)
    assert first.status_code == 202, first.text
    await container.dispatcher.run_until_idle()
    # a new subscriber must not change the answer of a replay, nor get a delivery from it
    await create_endpoint(client, f"{HOOK}/late")

    again = await client.post("/v1/events", json=body)

    assert again.status_code == 202, again.text
    assert again.json() == first.json() == {"id": "evt-42", "type": OPT_IN, "deliveries": 1}
    assert await count_events_and_deliveries(client) == (1, 1)
    await container.dispatcher.run_until_idle()
    assert len(receiver.requests) == 1


async def test_a_replay_is_recognised_whatever_the_order_of_the_json_keys(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post(
        "/v1/events",
        content=b'{"id":"evt-k","type":"PLAYER_OPTED_IN","data":'
        b'{"player_id":"p1","campaign_id":"c1","event_type":"PLAYER_OPTED_IN"}}',
        headers={"Content-Type": "application/json"},
    )
    again = await client.post(
        "/v1/events",
        content=b'{"data":{"event_type":"PLAYER_OPTED_IN","campaign_id":"c1",'
        b'"player_id":"p1"},"type":"PLAYER_OPTED_IN","id":"evt-k"}',
        headers={"Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert await count_events_and_deliveries(client) == (1, 0)


async def test_the_same_idempotency_key_and_body_returns_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    body = {"type": OPT_IN, "data": opt_in()}
    headers = {"Idempotency-Key": "order-7781"}
    first = await client.post("/v1/events", json=body, headers=headers)
    again = await client.post("/v1/events", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert first.json()["id"].startswith("evt_")
    assert await count_events_and_deliveries(client) == (1, 1)


async def test_without_an_id_or_key_the_same_body_twice_is_two_events(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    await publish(client)
    await publish(client)
    assert await count_events_and_deliveries(client) == (2, 2)


@pytest.mark.parametrize(
    "change",
    [
        {"data": opt_in("someone-else")},
        {"type": "round.completed", "data": example("round.completed")},
        {"ordering_key": "k2"},
        {"occurred_at": "2026-01-02T03:04:05Z"},
    ],
)
async def test_the_same_id_with_another_body_is_an_idempotency_mismatch(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    await create_endpoint(client, HOOK, event_types=[OPT_IN, "round.completed"])
    body = {"id": "evt-1", "type": OPT_IN, "data": opt_in(), "ordering_key": "k1"}
    assert (await client.post("/v1/events", json=body)).status_code == 202

    r = await client.post("/v1/events", json={**body, **change})

    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    stored = await get_json(client, "/v1/events/evt-1")
    assert stored["data"] == opt_in()
    assert stored["type"] == OPT_IN
    assert stored["ordering_key"] == "k1"
    assert await count_events_and_deliveries(client) == (1, 1)


async def test_the_same_idempotency_key_with_another_body_is_an_idempotency_mismatch(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in("p1")}, headers=headers
    )
    assert first.status_code == 202, first.text
    r = await client.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in("p2")}, headers=headers
    )
    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    [event] = await list_all(client, "/v1/events")
    assert event["data"] == opt_in("p1")
    assert await count_events_and_deliveries(client) == (1, 1)


async def test_the_same_idempotency_key_for_an_event_with_another_id_is_a_mismatch(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-2"}
    body = {"type": OPT_IN, "data": opt_in()}
    first = await client.post("/v1/events", json={"id": "evt-a", **body}, headers=headers)
    assert first.status_code == 202, first.text

    r = await client.post("/v1/events", json={"id": "evt-b", **body}, headers=headers)

    # Answering 202 with the id "evt-a" would tell the publisher that "evt-b" was accepted.
    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    assert_error(await client.get("/v1/events/evt-b"), 404, "NOT_FOUND")


async def test_an_idempotency_key_longer_than_200_characters_is_refused(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/events",
        json={"type": OPT_IN, "data": opt_in()},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert_error(r, 422, "VALIDATION_FAILED", "Idempotency-Key")
    assert await count_events_and_deliveries(client) == (0, 0)


async def test_concurrent_publishes_of_one_id_create_one_event_and_agree_on_the_answer(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    body = {"id": "evt-race", "type": OPT_IN, "data": opt_in()}
    answers = await asyncio.gather(*(client.post("/v1/events", json=body) for _ in range(8)))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    assert {r.text for r in answers} == {answers[0].text}
    assert await count_events_and_deliveries(client) == (1, 1)


async def test_concurrent_publishes_of_one_id_with_different_bodies_keep_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/events", json={"id": "evt-race", "type": OPT_IN, "data": opt_in(f"p{n}")}
            )
            for n in range(8)
        )
    )
    assert sum(r.status_code == 202 for r in answers) == 1, [r.text for r in answers]
    for r in answers:
        if r.status_code != 202:
            assert (r.status_code, r.json()["code"]) in (
                (422, "IDEMPOTENCY_MISMATCH"),
                (409, "CONCURRENT_WRITE"),
            ), r.text
    [winner] = [r for r in answers if r.status_code == 202]
    assert await count_events_and_deliveries(client) == (1, 1)
    stored = await get_json(client, "/v1/events/evt-race")
    winning_body = orjson.loads(winner.request.content)
    assert stored["data"] == winning_body["data"]


# -- what is refused ----------------------------------------------------------------------


async def test_an_unknown_type_is_refused_naming_the_type_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/events", json={"type": "round.finished", "data": {}})
    assert_error(r, 422, "UNKNOWN_EVENT_TYPE", "type")


@pytest.mark.parametrize(
    ("event_type", "mutate", "field"),
    [
        ("round.completed", lambda d: d.pop("gameId"), "data.gameId"),
        ("round.completed", lambda d: d.update(betAmount="2.00"), "data.betAmount"),
        ("round.completed", lambda d: d.update(winAmount=-1), "data.winAmount"),
        ("round.completed", lambda d: d["provablyFair"].pop("nonce"), "data.provablyFair.nonce"),
        ("player.limit_reached", lambda d: d.update(limitType="bogus"), "data.limitType"),
        ("player.limit_reached", lambda d: d.update(period=7), "data.period"),
        (OPT_IN, lambda d: d.update(event_type="PLAYER_OPTED_OUT"), "data.event_type"),
        (OPT_IN, lambda d: d.update(player_id=""), "data.player_id"),
    ],
)
async def test_a_payload_that_breaks_its_schema_is_refused_naming_the_failing_field(
    client: httpx.AsyncClient, event_type: str, mutate: Any, field: str
) -> None:
    data = opt_in() if event_type == OPT_IN else example(event_type)
    mutate(data)
    r = await client.post("/v1/events", json={"type": event_type, "data": data})
    body = assert_error(r, 422, "SCHEMA_VIOLATION", field)
    assert field.removeprefix("data.").split(".")[-1] in body["message"]


@pytest.mark.parametrize("data", [[], "text", 1, None, True, [opt_in()]])
async def test_data_that_is_not_an_object_is_refused(client: httpx.AsyncClient, data: Any) -> None:
    r = await client.post("/v1/events", json={"type": OPT_IN, "data": data})
    assert_error(r, 422, "VALIDATION_FAILED", "data")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": opt_in()}, "type"),
        ({"type": OPT_IN}, "data"),
        ({"type": 7, "data": opt_in()}, "type"),
        ({"type": OPT_IN, "data": opt_in(), "tenant_id": "other"}, "tenant_id"),
        ({"type": OPT_IN, "data": opt_in(), "payload": {}}, "payload"),
        ({"type": OPT_IN, "data": opt_in(), "id": "has space"}, "id"),
        ({"type": OPT_IN, "data": opt_in(), "id": ""}, "id"),
        ({"type": OPT_IN, "data": opt_in(), "id": "e" * 201}, "id"),
        ({"type": OPT_IN, "data": opt_in(), "id": 5}, "id"),
        ({"type": OPT_IN, "data": opt_in(), "ordering_key": "a/b"}, "ordering_key"),
        ({"type": OPT_IN, "data": opt_in(), "ordering_key": 3}, "ordering_key"),
    ],
)
async def test_a_malformed_publish_request_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/events", json=body)
    assert_error(r, 422, "VALIDATION_FAILED", field)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-01-02T03:04:05",
        "2026-01-02",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "",
        1767323045,
    ],
)
async def test_occurred_at_must_be_an_iso_8601_time_with_a_zone(
    client: httpx.AsyncClient, occurred_at: Any
) -> None:
    r = await client.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in(), "occurred_at": occurred_at}
    )
    assert_error(r, 422, "VALIDATION_FAILED", "occurred_at")


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_an_occurred_at_beyond_the_calendar_never_makes_the_events_unreadable(
    client: httpx.AsyncClient, occurred_at: str
) -> None:
    r = await client.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in(), "occurred_at": occurred_at}
    )
    if r.status_code != 202:
        assert_error(r, 422, "VALIDATION_FAILED", "occurred_at")
        return
    # Accepted: then the event, and every list that holds it, must still be readable.
    listed = await client.get("/v1/events")
    assert listed.status_code == 200, listed.text
    one = await client.get(f"/v1/events/{r.json()['id']}")
    assert one.status_code == 200, one.text


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/events",
        content=b'{"type": "PLAYER_OPTED_IN", "data": {',
        headers={"Content-Type": "application/json"},
    )
    assert_error(r, 400, "MALFORMED_JSON")


async def test_a_body_that_is_a_json_array_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/events", json=[{"type": OPT_IN, "data": opt_in()}])
    body = assert_error(r, 422, "VALIDATION_FAILED")
    assert "object" in body["message"]


async def test_a_body_over_256_kib_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/events", content=body_of_size(LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await count_events_and_deliveries(client) == (0, 0)


async def test_a_chunked_body_over_256_kib_without_a_length_is_413(
    client: httpx.AsyncClient,
) -> None:
    big = body_of_size(LIMIT + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16 * 1024):
            yield big[start : start + 16 * 1024]

    r = await client.post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await count_events_and_deliveries(client) == (0, 0)


async def test_a_body_of_exactly_256_kib_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/events", content=body_of_size(LIMIT), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 202, r.text[:300]


# -- trace ids ----------------------------------------------------------------------------


async def test_the_x_trace_id_is_echoed_stored_and_sent_on_with_the_delivery(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await create_endpoint(client, receiver.url())
    r = await client.post(
        "/v1/events",
        json={"type": OPT_IN, "data": opt_in()},
        headers={"X-Trace-Id": "trace-7f3a.9"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-trace-id"] == "trace-7f3a.9"
    stored = await get_json(client, f"/v1/events/{r.json()['id']}")
    assert stored["trace_id"] == "trace-7f3a.9"
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    assert req.headers["x-trace-id"] == "trace-7f3a.9"
    assert orjson.loads(req.body)["meta"]["trace_id"] == "trace-7f3a.9"


async def test_a_w3c_traceparent_gives_the_trace_id(client: httpx.AsyncClient) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    r = await client.post(
        "/v1/events",
        json={"type": OPT_IN, "data": opt_in()},
        headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-trace-id"] == trace
    assert (await get_json(client, f"/v1/events/{r.json()['id']}"))["trace_id"] == trace


@pytest.mark.parametrize("given", [None, "has spaces", "t" * 65])
async def test_without_a_usable_trace_id_one_is_made_up_and_stored(
    client: httpx.AsyncClient, given: str | None
) -> None:
    headers = {"X-Trace-Id": given} if given is not None else {}
    r = await client.post("/v1/events", json={"type": OPT_IN, "data": opt_in()}, headers=headers)
    assert r.status_code == 202, r.text
    made_up = r.headers["x-trace-id"]
    assert made_up and made_up != given
    assert (await get_json(client, f"/v1/events/{r.json()['id']}"))["trace_id"] == made_up


# -- nothing half-written -----------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
REFUSED: list[tuple[str, bytes, dict[str, str], int]] = [
    ("unknown type", b'{"type":"nope","data":{}}', JSON, 422),
    ("schema violation", b'{"type":"PLAYER_OPTED_IN","data":{"player_id":"p1"}}', JSON, 422),
    ("data not an object", b'{"type":"PLAYER_OPTED_IN","data":[1]}', JSON, 422),
    ("unknown field", b'{"type":"PLAYER_OPTED_IN","data":{},"x":1}', JSON, 422),
    (
        "occurred_at without zone",
        orjson.dumps({"type": OPT_IN, "data": opt_in(), "occurred_at": "2026-01-02T03:04:05"}),
        JSON,
        422,
    ),
    ("bad id", orjson.dumps({"id": "a b", "type": OPT_IN, "data": opt_in()}), JSON, 422),
    ("malformed json", b'{"type":', JSON, 400),
    ("too large", body_of_size(LIMIT + 1), JSON, 413),
    (
        "not json",
        orjson.dumps({"type": OPT_IN, "data": opt_in()}),
        {"Content-Type": "text/plain"},
        415,
    ),
]


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_a_refused_publish_writes_nothing(
    client: httpx.AsyncClient,
    container: Container,
    content: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    await create_endpoint(client, HOOK)
    r = await client.post("/v1/events", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert await count_events_and_deliveries(client) == (0, 0)
    assert await container.dispatcher.run_until_idle() == 0


async def test_a_refused_replay_under_a_used_id_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, HOOK)
    await publish(client, id="evt-used")
    await create_endpoint(client, f"{HOOK}/2")
    r = await client.post(
        "/v1/events", json={"id": "evt-used", "type": OPT_IN, "data": opt_in("p2")}
    )
    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    assert await count_events_and_deliveries(client) == (1, 1)
