"""Deliveries through the REST API: listing and filtering, attempts as recorded, retrying one
delivery, and replaying an endpoint's window."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from tests.integration.conftest import (
    OPT_IN,
    ReceiverFactory,
    assert_error,
    closed_port_url,
    create_endpoint,
    cursor_for,
    get_json,
    iso,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Receiver, Reply


class Switch:
    """A receiver script that fails (500) until switched on, then succeeds."""

    def __init__(self) -> None:
        self.ok = False

    def __call__(self, _path: str, _n: int) -> Reply:
        return Reply(200) if self.ok else Reply(500, body="not now")


async def delivery_of(client: httpx.AsyncClient, event_id: str) -> dict[str, Any]:
    [d] = (await get_json(client, f"/v1/events/{event_id}"))["deliveries"]
    detail = await get_json(client, f"/v1/deliveries/{d['id']}")
    return detail


def sent_ids(receiver: Receiver) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.requests]


# -- listing ------------------------------------------------------------------------------


async def test_deliveries_are_listed_newest_first(client: httpx.AsyncClient) -> None:
    await create_endpoint(client, "https://hooks.example.com/a")
    ids = [(await publish(client, data=opt_in(f"p{i}")))["id"] for i in range(4)]
    page = await get_json(client, "/v1/deliveries")
    assert [d["event_id"] for d in page["data"]] == list(reversed(ids))
    assert page["next_cursor"] is None


async def test_delivery_pages_cover_every_delivery_once_in_order(
    client: httpx.AsyncClient,
) -> None:
    await create_endpoint(client, "https://hooks.example.com/a")
    await create_endpoint(client, "https://hooks.example.com/b")
    for i in range(3):
        await publish(client, data=opt_in(f"p{i}"))
    first = await get_json(client, "/v1/deliveries", limit="4")
    assert len(first["data"]) == 4
    assert first["next_cursor"] is not None
    second = await get_json(client, "/v1/deliveries", limit="4", cursor=first["next_cursor"])
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None
    paged = [d["id"] for d in first["data"] + second["data"]]
    whole = [d["id"] for d in (await get_json(client, "/v1/deliveries", limit="500"))["data"]]
    assert paged == whole
    assert len(set(paged)) == 6


async def test_deliveries_can_be_filtered_by_endpoint_status_and_event_type(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    good = await create_endpoint(client, receiver.url(), event_types=[OPT_IN, "round.completed"])
    bad = await create_endpoint(client, closed_port_url(), retry_schedule=[0])
    await publish(client, data=opt_in("p1"))
    await publish(client, data=opt_in("p2"))
    await publish(client, "round.completed")
    await container.dispatcher.run_until_idle()

    mine = await list_all(client, "/v1/deliveries", endpoint_id=good["id"])
    assert len(mine) == 3
    assert {d["endpoint_id"] for d in mine} == {good["id"]}
    dead = await list_all(client, "/v1/deliveries", status="dead")
    assert len(dead) == 2
    assert {d["endpoint_id"] for d in dead} == {bad["id"]}
    assert {d["status"] for d in await list_all(client, "/v1/deliveries", status="succeeded")} == {
        "succeeded"
    }
    assert len(await list_all(client, "/v1/deliveries", status="succeeded")) == 3
    assert await list_all(client, "/v1/deliveries", status="pending") == []
    rounds = await list_all(client, "/v1/deliveries", event_type="round.completed")
    assert [(d["event_type"], d["endpoint_id"]) for d in rounds] == [
        ("round.completed", good["id"])
    ]
    both = await list_all(client, "/v1/deliveries", endpoint_id=bad["id"], status="succeeded")
    assert both == []


async def test_deliveries_can_be_filtered_by_since(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await create_endpoint(client, "https://hooks.example.com/a")
    await publish(client)
    clock.advance(30)
    since = iso(clock)
    later = await publish(client)
    listed = await list_all(client, "/v1/deliveries", since=since)
    assert [d["event_id"] for d in listed] == [later["id"]]


@pytest.mark.parametrize("status", ["DEAD", "failing", "all", ""])
async def test_an_unknown_status_filter_is_refused(client: httpx.AsyncClient, status: str) -> None:
    r = await client.get("/v1/deliveries", params={"status": status})
    assert_error(r, 422, "VALIDATION_FAILED", "status")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-01-01"}, "since"),
        ({"since": "soon"}, "since"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": cursor_for("dlv_x")}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1000"}, "limit"),
    ],
)
async def test_bad_delivery_list_parameters_are_refused(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await client.get("/v1/deliveries", params=params)
    assert_error(r, 422, "VALIDATION_FAILED", field)


# -- one delivery and its attempts --------------------------------------------------------


async def test_a_delivery_shows_every_attempt_with_status_timing_headers_and_body(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    receiver = await start_receiver(
        lambda _p, n: (
            Reply(503, body="down for maintenance", headers={"X-Reason": "upgrade"})
            if n == 0
            else Reply(202, body="accepted")
        )
    )
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0, 20])
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    failed_at = iso(clock)

    d = await delivery_of(client, event["id"])
    assert d["status"] == "failed"
    assert d["endpoint_id"] == ep["id"]
    assert d["event_id"] == event["id"]
    assert d["event_type"] == OPT_IN
    assert d["last_status_code"] == 503
    assert d["next_attempt_at"] == iso(clock, 20)
    [first] = d["attempt_log"]
    assert first["number"] == 1
    assert first["status_code"] == 503
    assert first["succeeded"] is False
    assert first["error"] is None
    assert first["started_at"] == failed_at
    assert isinstance(first["duration_ms"], int | float)
    assert 0 <= first["duration_ms"] < 10_000
    assert first["response_headers"]["x-reason"] == "upgrade"
    assert first["response_body"] == "down for maintenance"
    assert first["request_headers"]["webhook-id"] == event["id"]
    assert first["request_headers"]["webhook-signature"].startswith("v1,")

    clock.advance(20)
    await container.dispatcher.run_until_idle()
    d = await delivery_of(client, event["id"])
    assert d["status"] == "succeeded"
    assert d["last_status_code"] == 202
    assert d["next_attempt_at"] is None
    assert [a["number"] for a in d["attempt_log"]] == [1, 2]
    second = d["attempt_log"][1]
    assert second["status_code"] == 202
    assert second["succeeded"] is True
    assert second["response_body"] == "accepted"


async def test_an_attempt_keeps_only_the_first_4_kib_of_the_response_body(
    client: httpx.AsyncClient, container: Container, start_receiver: ReceiverFactory
) -> None:
    long_body = "".join(str(i % 10) for i in range(10 * 1024))
    receiver = await start_receiver(lambda _p, _n: Reply(200, body=long_body))
    await create_endpoint(client, receiver.url())
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    [attempt] = (await delivery_of(client, event["id"]))["attempt_log"]
    assert attempt["response_body"] == long_body[:4096]


async def test_a_refused_connection_is_recorded_as_an_error_without_a_status(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_endpoint(client, closed_port_url(), retry_schedule=[0])
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    d = await delivery_of(client, event["id"])
    assert d["status"] == "dead"
    assert d["last_status_code"] is None
    [attempt] = d["attempt_log"]
    assert attempt["status_code"] is None
    assert attempt["succeeded"] is False
    assert attempt["error"]
    assert "connect" in attempt["error"].lower()
    assert d["last_error"] == attempt["error"]
    assert attempt["response_body"] == ""


async def test_getting_a_delivery_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/deliveries/dlv_missing"), 404, "NOT_FOUND")


# -- retrying one delivery ----------------------------------------------------------------


async def test_retrying_a_dead_delivery_sends_it_again_now(
    client: httpx.AsyncClient, container: Container, start_receiver: ReceiverFactory
) -> None:
    switch = Switch()
    receiver = await start_receiver(switch)
    await create_endpoint(client, receiver.url(), retry_schedule=[0])
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    dead = await delivery_of(client, event["id"])
    assert dead["status"] == "dead"
    assert await container.dispatcher.run_until_idle() == 0

    switch.ok = True
    r = await client.post(f"/v1/deliveries/{dead['id']}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["id"] == dead["id"]
    assert r.json()["status"] == "pending"

    assert await container.dispatcher.run_until_idle() == 1
    d = await delivery_of(client, event["id"])
    assert d["status"] == "succeeded"
    assert [a["number"] for a in d["attempt_log"]] == [1, 2]
    [listed] = await list_all(client, "/v1/deliveries")
    assert listed["attempts"] == 2
    assert sent_ids(receiver) == [event["id"], event["id"]]
    assert orjson.loads(receiver.requests[1].body)["meta"]["attempt"] == 2


async def test_a_retried_delivery_gets_its_whole_schedule_again(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    receiver = await start_receiver(lambda _p, n: Reply(500) if n < 3 else Reply(200))
    await create_endpoint(client, receiver.url(), retry_schedule=[0, 10])
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    clock.advance(10)
    await container.dispatcher.run_until_idle()
    d = await delivery_of(client, event["id"])
    assert (d["status"], len(d["attempt_log"])) == ("dead", 2)

    await client.post(f"/v1/deliveries/{d['id']}/retry")
    await container.dispatcher.run_until_idle()
    d = await delivery_of(client, event["id"])
    assert (d["status"], len(d["attempt_log"])) == ("failed", 3)
    assert d["next_attempt_at"] == iso(clock, 10)

    clock.advance(10)
    await container.dispatcher.run_until_idle()
    d = await delivery_of(client, event["id"])
    assert (d["status"], len(d["attempt_log"])) == ("succeeded", 4)
    assert len(receiver.requests) == 4


async def test_retrying_a_delivery_of_a_disabled_endpoint_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    ep = await create_endpoint(client, closed_port_url(), retry_schedule=[0])
    event = await publish(client)
    await container.dispatcher.run_until_idle()
    await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": True})
    d = await delivery_of(client, event["id"])
    r = await client.post(f"/v1/deliveries/{d['id']}/retry")
    assert_error(r, 409, "ENDPOINT_DISABLED")
    assert (await delivery_of(client, event["id"]))["status"] == "dead"


async def test_retrying_a_delivery_of_a_deleted_endpoint_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, "https://hooks.example.com/a")
    event = await publish(client)
    d = await delivery_of(client, event["id"])
    await client.delete(f"/v1/endpoints/{ep['id']}")
    r = await client.post(f"/v1/deliveries/{d['id']}/retry")
    assert_error(r, 409, "CONFLICT")
    assert (await delivery_of(client, event["id"]))["status"] == "cancelled"


async def test_retrying_a_delivery_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/deliveries/dlv_missing/retry"), 404, "NOT_FOUND")


# -- replaying an endpoint ----------------------------------------------------------------


async def test_replaying_dead_deliveries_sends_them_again(
    client: httpx.AsyncClient, container: Container, start_receiver: ReceiverFactory
) -> None:
    switch = Switch()
    receiver = await start_receiver(switch)
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0])
    events = [(await publish(client, data=opt_in(f"p{i}")))["id"] for i in range(3)]
    await container.dispatcher.run_until_idle()
    assert len(await list_all(client, "/v1/deliveries", status="dead")) == 3

    switch.ok = True
    r = await client.post(f"/v1/endpoints/{ep['id']}/replay", json={"status": "dead"})
    assert r.status_code == 202, r.text
    assert r.json() == {"count": 3}

    assert await container.dispatcher.run_until_idle() == 3
    assert sorted(sent_ids(receiver)) == sorted(events * 2)
    assert len(await list_all(client, "/v1/deliveries", status="succeeded")) == 3
    assert await list_all(client, "/v1/deliveries", status="dead") == []


async def test_a_replay_without_a_body_replays_the_dead_letters(
    client: httpx.AsyncClient, container: Container, start_receiver: ReceiverFactory
) -> None:
    switch = Switch()
    receiver = await start_receiver(switch)
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0])
    await publish(client)
    await container.dispatcher.run_until_idle()
    switch.ok = True
    r = await client.post(f"/v1/endpoints/{ep['id']}/replay")
    assert r.status_code == 202, r.text
    assert r.json() == {"count": 1}
    assert await container.dispatcher.run_until_idle() == 1
    assert len(receiver.requests) == 2


async def test_the_replay_status_chooses_failed_dead_or_all(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    switch = Switch()
    receiver = await start_receiver(switch)
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0, 3600])
    replay = f"/v1/endpoints/{ep['id']}/replay"
    dead = (await publish(client, data=opt_in("dead")))["id"]
    await container.dispatcher.run_until_idle()
    clock.advance(3600)
    await container.dispatcher.run_until_idle()
    failed = (await publish(client, data=opt_in("failed")))["id"]
    await container.dispatcher.run_until_idle()
    switch.ok = True
    done = (await publish(client, data=opt_in("done")))["id"]
    await container.dispatcher.run_until_idle()
    statuses = {e: (await delivery_of(client, e))["status"] for e in (dead, failed, done)}
    assert statuses == {dead: "dead", failed: "failed", done: "succeeded"}
    receiver.requests.clear()

    r = await client.post(replay, json={"status": "failed"})
    assert r.json() == {"count": 1}
    await container.dispatcher.run_until_idle()
    assert sent_ids(receiver) == [failed]

    r = await client.post(replay, json={"status": "dead"})
    assert r.json() == {"count": 1}
    await container.dispatcher.run_until_idle()
    assert sent_ids(receiver) == [failed, dead]

    r = await client.post(replay, json={"status": "all"})
    assert r.json() == {"count": 3}
    await container.dispatcher.run_until_idle()
    assert sorted(sent_ids(receiver)[2:]) == sorted([dead, failed, done])


async def test_a_replay_only_touches_deliveries_inside_its_time_window(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    switch = Switch()
    receiver = await start_receiver(switch)
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0])
    replay = f"/v1/endpoints/{ep['id']}/replay"
    start = clock.now_ms()
    early = (await publish(client, data=opt_in("early")))["id"]
    clock.advance(100)
    middle = (await publish(client, data=opt_in("middle")))["id"]
    clock.advance(100)
    late = (await publish(client, data=opt_in("late")))["id"]
    await container.dispatcher.run_until_idle()
    receiver.requests.clear()
    switch.ok = True

    def at(offset_s: int) -> str:
        return iso(ManualClock(start + offset_s * 1000))

    r = await client.post(replay, json={"status": "dead", "since": at(50), "until": at(150)})
    assert r.json() == {"count": 1}
    await container.dispatcher.run_until_idle()
    assert sent_ids(receiver) == [middle]

    r = await client.post(replay, json={"status": "dead", "since": at(150)})
    assert r.json() == {"count": 1}
    await container.dispatcher.run_until_idle()
    assert sent_ids(receiver) == [middle, late]

    r = await client.post(replay, json={"status": "dead", "until": at(50)})
    assert r.json() == {"count": 1}
    await container.dispatcher.run_until_idle()
    assert sent_ids(receiver) == [middle, late, early]


async def test_a_replay_with_nothing_to_replay_counts_zero(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await create_endpoint(client, receiver.url())
    await publish(client)
    await container.dispatcher.run_until_idle()
    r = await client.post(f"/v1/endpoints/{ep['id']}/replay", json={"status": "dead"})
    assert r.status_code == 202, r.text
    assert r.json() == {"count": 0}
    assert await container.dispatcher.run_until_idle() == 0


async def test_replaying_a_disabled_endpoint_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    ep = await create_endpoint(client, closed_port_url(), retry_schedule=[0])
    await publish(client)
    await container.dispatcher.run_until_idle()
    await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": True})
    r = await client.post(f"/v1/endpoints/{ep['id']}/replay", json={"status": "all"})
    assert_error(r, 409, "ENDPOINT_DISABLED")
    assert len(await list_all(client, "/v1/deliveries", status="dead")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"status": "DEAD"}, "status"),
        ({"status": "everything"}, "status"),
        ({"status": 1}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-02T00:00:00Z"}, "until"),
        ({"endpoint_id": "ep_x"}, "endpoint_id"),
    ],
)
async def test_a_replay_with_a_bad_body_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    ep = await create_endpoint(client, "https://hooks.example.com/a")
    r = await client.post(f"/v1/endpoints/{ep['id']}/replay", json=body)
    assert_error(r, 422, "VALIDATION_FAILED", field)


async def test_replaying_an_endpoint_that_does_not_exist_is_404(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/v1/endpoints/ep_missing/replay", json={"status": "dead"})
    assert_error(r, 404, "NOT_FOUND")
