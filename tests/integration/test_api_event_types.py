"""The event catalog through the REST API: the shipped types, and a tenant's own types that
publishing validates against and endpoints can subscribe to."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from croupier.bootstrap import Container
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.domain.clock import ManualClock
from croupier.domain.network import AddressPolicy
from croupier.services.event_types import TYPE_CACHE_MS, EventTypeService
from tests.integration.conftest import (
    assert_error,
    create_endpoint,
    example,
    get_json,
    list_all,
)
from tests.support.receiver import Receiver

SHIPPED = [
    "PLAYER_OPTED_IN",
    "PLAYER_OPTED_OUT",
    "PRIZE_PAYOUT_CREATED",
    "PRIZE_PAYOUT_FAILED",
    "PRIZE_PAYOUT_SUCCEEDED",
    "bet.settled",
    "delivery.dead",
    "endpoint.disabled",
    "player.created",
    "player.limit_reached",
    "player.self_excluded",
    "player.suspended",
    "round.cancelled",
    "round.completed",
    "round.jackpot_won",
    "system.game_version_updated",
    "system.incident",
    "system.maintenance",
    "wallet.bet_placed",
    "wallet.credit.ok",
    "wallet.deposit_confirmed",
    "wallet.rollback",
    "wallet.win_credited",
    "wallet.withdrawal_completed",
    "wallet.withdrawal_failed",
]
DEFAULTS = {
    "round.completed",
    "wallet.deposit_confirmed",
    "wallet.withdrawal_completed",
    "player.limit_reached",
    "system.maintenance",
}
NON_CORE = {"PLAYER_OPTED_IN", "PLAYER_OPTED_OUT", "system.game_version_updated"}
SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0}, "player": {"type": "string"}},
    "required": ["score", "player"],
    "additionalProperties": False,
}


async def put_type(
    client: httpx.AsyncClient, name: str, schema: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    r = await client.put(f"/v1/event-types/{name}", json={"schema": schema, **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- the shipped catalog ------------------------------------------------------------------


async def test_the_catalog_lists_the_25_shipped_types(client: httpx.AsyncClient) -> None:
    page = await get_json(client, "/v1/event-types")
    assert len(SHIPPED) == 25
    assert sorted(t["name"] for t in page["data"]) == sorted(SHIPPED)
    assert page["next_cursor"] is None
    assert all(t["builtin"] is True for t in page["data"])
    assert {t["name"] for t in page["data"] if t["default_subscription"]} == DEFAULTS


async def test_every_shipped_type_shows_whether_it_is_core(client: httpx.AsyncClient) -> None:
    page = await get_json(client, "/v1/event-types")
    assert all(isinstance(t["core"], bool) for t in page["data"])
    assert {t["name"] for t in page["data"] if not t["core"]} == NON_CORE
    assert (await get_json(client, "/v1/event-types/PLAYER_OPTED_OUT"))["core"] is False
    assert (await get_json(client, "/v1/event-types/delivery.dead"))["core"] is True


async def test_a_shipped_type_is_read_with_its_schema_version_and_examples(
    client: httpx.AsyncClient,
) -> None:
    t = await get_json(client, "/v1/event-types/round.completed")
    assert t["name"] == "round.completed"
    assert t["builtin"] is True
    assert t["default_subscription"] is True
    assert t["schema_version"] == "1.0.0"
    assert t["category"] == "game"
    assert t["description"]
    assert "gameId" in t["schema"]["required"]
    assert t["examples"] == [example("round.completed")]


@pytest.mark.parametrize("name", SHIPPED)
async def test_the_example_of_every_shipped_type_can_be_published(
    client: httpx.AsyncClient, name: str
) -> None:
    shown = await get_json(client, f"/v1/event-types/{name}")
    for data in shown["examples"]:
        r = await client.post("/v1/events", json={"type": name, "data": data})
        assert r.status_code == 202, r.text


@pytest.mark.parametrize("name", ["round.finished", "Round.Completed", "round", "my.type"])
async def test_a_type_that_does_not_exist_is_404(client: httpx.AsyncClient, name: str) -> None:
    assert_error(await client.get(f"/v1/event-types/{name}"), 404, "NOT_FOUND")


# -- a tenant's own types -----------------------------------------------------------------


async def test_put_creates_a_type_listed_next_to_the_shipped_ones(
    client: httpx.AsyncClient,
) -> None:
    created = await put_type(
        client, "loyalty.scored", SCORE_SCHEMA, schema_version="1.2.0", description="points"
    )
    assert created == {
        "name": "loyalty.scored",
        "category": "custom",
        "description": "points",
        "schema_version": "1.2.0",
        "default_subscription": False,
        "builtin": False,
        "core": True,
        "schema": SCORE_SCHEMA,
        "examples": [],
    }
    assert await get_json(client, "/v1/event-types/loyalty.scored") == created
    listed = (await get_json(client, "/v1/event-types"))["data"]
    assert len(listed) == 26
    assert created in listed


async def test_a_type_put_with_core_false_is_stored_and_shown_as_not_core(
    client: httpx.AsyncClient,
) -> None:
    created = await put_type(client, "loyalty.scored", SCORE_SCHEMA, core=False)
    assert created["core"] is False
    assert (await get_json(client, "/v1/event-types/loyalty.scored"))["core"] is False
    listed = (await get_json(client, "/v1/event-types"))["data"]
    assert [t["core"] for t in listed if t["name"] == "loyalty.scored"] == [False]


async def test_a_put_again_without_core_makes_the_type_core_again(
    client: httpx.AsyncClient,
) -> None:
    # PUT replaces the whole definition: a field left out takes its default.
    await put_type(client, "loyalty.scored", SCORE_SCHEMA, core=False)
    assert (await put_type(client, "loyalty.scored", SCORE_SCHEMA))["core"] is True
    assert (await get_json(client, "/v1/event-types/loyalty.scored"))["core"] is True
    replaced = await put_type(client, "loyalty.scored", SCORE_SCHEMA, core=False)
    assert replaced["core"] is False
    assert (await get_json(client, "/v1/event-types/loyalty.scored"))["core"] is False


async def test_a_put_without_a_version_gets_1_0_0(client: httpx.AsyncClient) -> None:
    assert (await put_type(client, "loyalty.scored", SCORE_SCHEMA))["schema_version"] == "1.0.0"


async def test_publishing_a_tenant_type_validates_against_its_schema(
    client: httpx.AsyncClient,
) -> None:
    await put_type(client, "loyalty.scored", SCORE_SCHEMA, schema_version="3.1.4")
    ok = await client.post(
        "/v1/events", json={"type": "loyalty.scored", "data": {"score": 5, "player": "p1"}}
    )
    assert ok.status_code == 202, ok.text
    assert (await get_json(client, f"/v1/events/{ok.json()['id']}"))["schema_version"] == "3.1.4"

    for data, field in [
        ({"player": "p1"}, "data.score"),
        ({"score": -1, "player": "p1"}, "data.score"),
        ({"score": "5", "player": "p1"}, "data.score"),
        ({"score": 5, "player": "p1", "extra": True}, "data"),
    ]:
        r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": data})
        assert_error(r, 422, "SCHEMA_VIOLATION", field)
    assert len(await list_all(client, "/v1/events")) == 1


async def test_put_again_replaces_the_schema_and_version(client: httpx.AsyncClient) -> None:
    await put_type(client, "loyalty.scored", SCORE_SCHEMA)
    relaxed = {"type": "object", "required": ["player"]}
    replaced = await put_type(client, "loyalty.scored", relaxed, schema_version="2.0.0")
    assert replaced["schema"] == relaxed
    assert (await get_json(client, "/v1/event-types/loyalty.scored"))["schema_version"] == "2.0.0"
    assert len((await get_json(client, "/v1/event-types"))["data"]) == 26

    r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": {"player": "p"}})
    assert r.status_code == 202, r.text
    assert (await get_json(client, f"/v1/events/{r.json()['id']}"))["schema_version"] == "2.0.0"
    r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": {"score": 1}})
    assert_error(r, 422, "SCHEMA_VIOLATION", "data.player")


async def test_a_type_replaced_by_another_process_applies_to_publishes_within_seconds(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    await put_type(client, "loyalty.scored", SCORE_SCHEMA)
    r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": {"player": "p"}})
    assert_error(r, 422, "SCHEMA_VIOLATION", "data.score")
    # Another croupier process on the same database relaxes the schema.
    other = EventTypeService(container.store, clock)
    await other.put(
        "default",
        "loyalty.scored",
        schema={"type": "object"},
        schema_version="2.0.0",
        description="",
    )
    r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": {"player": "p"}})
    assert_error(r, 422, "SCHEMA_VIOLATION", "data.score")
    clock.advance(TYPE_CACHE_MS / 1000)
    r = await client.post("/v1/events", json={"type": "loyalty.scored", "data": {"player": "p"}})
    assert r.status_code == 202, r.text
    assert (await get_json(client, f"/v1/events/{r.json()['id']}"))["schema_version"] == "2.0.0"


async def test_an_endpoint_can_subscribe_to_a_tenant_type_and_receive_it(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await put_type(client, "loyalty.scored", SCORE_SCHEMA, schema_version="1.1.0")
    await create_endpoint(client, receiver.url(), event_types=["loyalty.scored"])
    r = await client.post(
        "/v1/events", json={"type": "loyalty.scored", "data": {"score": 7, "player": "p1"}}
    )
    assert r.status_code == 202, r.text
    assert r.json()["deliveries"] == 1
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    envelope = orjson.loads(req.body)
    assert envelope["type"] == "loyalty.scored"
    assert envelope["schema_version"] == "1.1.0"
    assert envelope["data"] == {"score": 7, "player": "p1"}


async def test_a_tenant_type_marked_not_core_waits_while_the_backlog_is_over_its_threshold(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await put_type(client, "loyalty.scored", SCORE_SCHEMA, core=False)
    await put_type(client, "loyalty.redeemed", SCORE_SCHEMA)
    await create_endpoint(
        client, receiver.url(), event_types=["loyalty.scored", "loyalty.redeemed"]
    )
    for name, count in [("loyalty.scored", 8), ("loyalty.redeemed", 3)]:
        for n in range(count):
            data = {"score": n, "player": "p1"}
            r = await client.post("/v1/events", json={"type": name, "data": data})
            assert r.status_code == 202, r.text
    dispatcher = Dispatcher(
        container.dispatcher.queue,
        clock=clock,
        config=DispatcherConfig(
            address_policy=AddressPolicy(allow_loopback=True),
            overload_backlog=5,
            overload_check_s=0.0,
        ),
    )
    await dispatcher.run_until_idle()
    # 11 due > 5: the core type goes first; the other is kept, then sent once the core
    # backlog is down to half the threshold.
    sent = [orjson.loads(req.body)["type"] for req in receiver.requests]
    assert sent == ["loyalty.redeemed"] * 3 + ["loyalty.scored"] * 8


async def test_concurrent_puts_of_a_new_type_leave_one_definition(
    client: httpx.AsyncClient,
) -> None:
    answers = await asyncio.gather(
        *(
            client.put(
                "/v1/event-types/loyalty.scored",
                json={"schema": SCORE_SCHEMA, "schema_version": f"1.0.{n}"},
            )
            for n in range(6)
        )
    )
    for r in answers:
        if r.status_code != 200:
            assert_error(r, 409, "CONCURRENT_WRITE")
            assert r.json()["retryable"] is True
    assert any(r.status_code == 200 for r in answers)
    listed = [t["name"] for t in (await get_json(client, "/v1/event-types"))["data"]]
    assert listed.count("loyalty.scored") == 1


# -- what PUT refuses ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULTS | {"PLAYER_OPTED_IN", "bet.settled"}))
async def test_a_shipped_type_cannot_be_redefined(client: httpx.AsyncClient, name: str) -> None:
    before = await get_json(client, f"/v1/event-types/{name}")
    r = await client.put(f"/v1/event-types/{name}", json={"schema": {"type": "object"}})
    assert_error(r, 409, "EVENT_TYPE_READ_ONLY")
    assert await get_json(client, f"/v1/event-types/{name}") == before


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"type": "object", "minProperties": -1},
        {"required": "score"},
        {"properties": {"score": {"type": 5}}},
        {"enum": "not-a-list"},
    ],
)
async def test_a_schema_that_is_not_valid_json_schema_is_refused(
    client: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    r = await client.put("/v1/event-types/loyalty.scored", json={"schema": schema})
    body = assert_error(r, 422, "VALIDATION_FAILED")
    assert body["field"].startswith("schema")
    assert_error(await client.get("/v1/event-types/loyalty.scored"), 404, "NOT_FOUND")


@pytest.mark.parametrize("schema", [[{"type": "object"}], "object", None, 1])
async def test_a_schema_that_is_not_an_object_is_refused(
    client: httpx.AsyncClient, schema: Any
) -> None:
    r = await client.put("/v1/event-types/loyalty.scored", json={"schema": schema})
    assert_error(r, 422, "VALIDATION_FAILED", "schema")


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0.0", "", "latest", 1])
async def test_a_schema_version_that_is_not_major_minor_patch_is_refused(
    client: httpx.AsyncClient, version: Any
) -> None:
    r = await client.put(
        "/v1/event-types/loyalty.scored",
        json={"schema": {"type": "object"}, "schema_version": version},
    )
    assert_error(r, 422, "VALIDATION_FAILED", "schema_version")


@pytest.mark.parametrize("name", ["1st.type", "-type", "has space", "a" * 201, "emoji\u2728"])
async def test_a_type_name_must_start_with_a_letter_and_be_short(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.put(f"/v1/event-types/{name}", json={"schema": {"type": "object"}})
    assert_error(r, 422, "VALIDATION_FAILED", "name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "schema"),
        ({"schema": {}, "name": "x"}, "name"),
        ({"schema": {}, "builtin": True}, "builtin"),
    ],
)
async def test_a_put_body_is_checked_field_by_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.put("/v1/event-types/loyalty.scored", json=body)
    assert_error(r, 422, "VALIDATION_FAILED", field)


@pytest.mark.parametrize("core", ["false", "true", 0, 1, None, [], {}])
async def test_a_core_that_is_not_a_bool_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, core: Any
) -> None:
    r = await client.put(
        "/v1/event-types/loyalty.scored", json={"schema": {"type": "object"}, "core": core}
    )
    assert_error(r, 422, "VALIDATION_FAILED", "core")
    assert_error(await client.get("/v1/event-types/loyalty.scored"), 404, "NOT_FOUND")


async def test_a_shipped_type_stays_read_only_whatever_core_is_sent(
    client: httpx.AsyncClient,
) -> None:
    for name, core in [("PLAYER_OPTED_IN", True), ("round.completed", False)]:
        before = await get_json(client, f"/v1/event-types/{name}")
        r = await client.put(
            f"/v1/event-types/{name}", json={"schema": {"type": "object"}, "core": core}
        )
        assert_error(r, 409, "EVENT_TYPE_READ_ONLY")
        assert await get_json(client, f"/v1/event-types/{name}") == before


async def assert_never_a_500(client: httpx.AsyncClient, name: str, schema: dict[str, Any]) -> None:
    """A schema croupier cannot use is refused at PUT (422), or else publishing with it is
    a clear 4xx; it never becomes a 500 on every publish of the type."""
    put = await client.put(f"/v1/event-types/{name}", json={"schema": schema})
    if put.status_code == 422:
        assert_error(put, 422, "VALIDATION_FAILED")
        return
    assert put.status_code == 200, put.text
    r = await client.post("/v1/events", json={"type": name, "data": {"x": 1}})
    assert 400 <= r.status_code < 500, r.text
    assert await list_all(client, "/v1/events") == []


async def test_a_schema_with_a_reference_to_nowhere_never_becomes_a_500(
    client: httpx.AsyncClient,
) -> None:
    await assert_never_a_500(client, "broken.ref", {"$ref": "#/$defs/missing"})


async def test_a_schema_is_never_fetched_from_the_network(client: httpx.AsyncClient) -> None:
    # Following a remote $ref would make croupier call any URL a tenant names, at publish
    # time. The schema server runs in its own thread: a fetch made while blocking the event
    # loop must still get an answer, so that the test reports it instead of hanging.
    with SchemaServer() as server:
        await assert_never_a_500(client, "remote.ref", {"$ref": server.url})
        assert server.requested == []


class SchemaServer:
    """An HTTP server on 127.0.0.1, in a thread, serving one permissive JSON Schema."""

    def __init__(self) -> None:
        self.requested: list[str] = []
        requested = self.requested

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requested.append(self.path)
                body = b'{"type": "object"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/schema.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SchemaServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
