"""The pull API: ``GET /v1/events`` in publish order with filters and cursors, and
``GET /v1/events/{id}`` with its deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from tests.integration.conftest import (
    OPT_IN,
    assert_error,
    create_endpoint,
    cursor_for,
    get_json,
    iso,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Receiver


async def publish_many(client: httpx.AsyncClient, n: int, prefix: str = "p") -> list[str]:
    return [(await publish(client, data=opt_in(f"{prefix}{i}")))["id"] for i in range(n)]


async def test_events_are_listed_in_publish_order(client: httpx.AsyncClient) -> None:
    ids = [
        (await publish(client, id="zz-first"))["id"],
        (await publish(client, "round.completed", id="aa-second"))["id"],
        (await publish(client, id="mm-third"))["id"],
    ]
    page = await get_json(client, "/v1/events")
    assert [e["id"] for e in page["data"]] == ids
    assert page["next_cursor"] is None


async def test_a_listed_event_carries_its_fields(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await publish(client, id="evt-1", ordering_key="k", occurred_at="2026-03-04T05:06:07.891Z")
    [event] = (await get_json(client, "/v1/events"))["data"]
    assert event["id"] == "evt-1"
    assert event["type"] == OPT_IN
    assert event["data"] == opt_in()
    assert event["ordering_key"] == "k"
    assert event["occurred_at"] == "2026-03-04T05:06:07.891Z"
    assert event["schema_version"] == "1.0.0"
    assert event["trace_id"]


async def test_events_can_be_filtered_by_type(client: httpx.AsyncClient) -> None:
    rounds = []
    for _ in range(3):
        await publish(client)
        rounds.append((await publish(client, "round.completed"))["id"])
    listed = await list_all(client, "/v1/events", type="round.completed", limit="2")
    assert [e["id"] for e in listed] == rounds
    assert {e["type"] for e in listed} == {"round.completed"}
    assert await list_all(client, "/v1/events", type="system.maintenance") == []


async def test_events_can_be_filtered_by_since(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await publish_many(client, 2, "old")
    clock.advance(60)
    since = iso(clock)
    newer = await publish_many(client, 2, "new")
    clock.advance(60)
    newest = await publish_many(client, 1, "newest")
    listed = await list_all(client, "/v1/events", since=since)
    assert [e["id"] for e in listed] == newer + newest


async def test_since_accepts_any_time_zone(client: httpx.AsyncClient, clock: ManualClock) -> None:
    clock.advance(-3600)
    await publish(client)
    clock.advance(3600)
    late = await publish(client)
    cutoff = clock.now_ms() - 1800_000
    at = datetime.fromtimestamp(cutoff / 1000, tz=UTC).astimezone(timezone(timedelta(hours=-5)))
    listed = await list_all(client, "/v1/events", since=at.isoformat())
    assert [e["id"] for e in listed] == [late["id"]]


@pytest.mark.parametrize("since", ["2026-01-02T03:04:05", "last week", "2026-02-30T00:00:00Z"])
async def test_a_since_that_is_not_a_time_with_a_zone_is_refused(
    client: httpx.AsyncClient, since: str
) -> None:
    r = await client.get("/v1/events", params={"since": since})
    assert_error(r, 422, "VALIDATION_FAILED", "since")


async def test_pages_follow_next_cursor_until_it_is_null(client: httpx.AsyncClient) -> None:
    ids = await publish_many(client, 7)
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3"} if cursor is None else {"limit": "3", "cursor": cursor}
        page = await get_json(client, "/v1/events", **params)
        seen += [e["id"] for e in page["data"]]
        sizes.append(len(page["data"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == ids


async def test_the_resume_cursor_returns_only_what_was_published_later(
    client: httpx.AsyncClient,
) -> None:
    await publish_many(client, 3, "a")
    page = await get_json(client, "/v1/events")
    assert len(page["data"]) == 3
    assert page["next_cursor"] is None
    resume = page["resume_cursor"]
    assert resume

    nothing_new = await get_json(client, "/v1/events", cursor=resume)
    assert nothing_new["data"] == []
    assert nothing_new["next_cursor"] is None
    assert nothing_new["resume_cursor"] == resume

    later = await publish_many(client, 2, "b")
    caught_up = await get_json(client, "/v1/events", cursor=resume)
    assert [e["id"] for e in caught_up["data"]] == later
    again = await get_json(client, "/v1/events", cursor=caught_up["resume_cursor"])
    assert again["data"] == []


async def test_the_resume_cursor_of_a_filtered_poll_skips_what_was_read(
    client: httpx.AsyncClient,
) -> None:
    await publish(client, "round.completed")
    page = await get_json(client, "/v1/events", type="round.completed")
    await publish(client)
    newer = await publish(client, "round.completed")
    later = await get_json(
        client, "/v1/events", type="round.completed", cursor=page["resume_cursor"]
    )
    assert [e["id"] for e in later["data"]] == [newer["id"]]


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        "not-a-cursor",
        cursor_for("ep_01HZX"),
        cursor_for(True),
        cursor_for([1]),
        cursor_for(1.5),
        "eyJxIjoxfQ",  # {"q":1}
        cursor_for(2**64 - 1),
        cursor_for(2**63),
        "x" * 201,
    ],
    ids=[
        "not-base64",
        "not-json",
        "string-position",
        "bool-position",
        "list-position",
        "float-position",
        "no-position",
        "position-2**64-1",
        "position-2**63",
        "too-long",
    ],
)
async def test_a_cursor_not_made_by_croupier_is_refused(
    client: httpx.AsyncClient, cursor: str
) -> None:
    await publish(client)
    r = await client.get("/v1/events", params={"cursor": cursor})
    assert_error(r, 422, "VALIDATION_FAILED", "cursor")


@pytest.mark.parametrize("limit", ["0", "501", "ten"])
async def test_an_events_limit_out_of_range_is_refused(
    client: httpx.AsyncClient, limit: str
) -> None:
    r = await client.get("/v1/events", params={"limit": limit})
    assert_error(r, 422, "VALIDATION_FAILED", "limit")


async def test_getting_an_event_includes_its_deliveries(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    one = await create_endpoint(client, receiver.url("/one"))
    two = await create_endpoint(client, receiver.url("/two"))
    await create_endpoint(client, receiver.url("/rounds"), event_types=["round.completed"])
    answer = await publish(client, ordering_key="player-1")

    event = await get_json(client, f"/v1/events/{answer['id']}")
    assert event["id"] == answer["id"]
    assert event["data"] == opt_in()
    assert {d["endpoint_id"] for d in event["deliveries"]} == {one["id"], two["id"]}
    assert {d["status"] for d in event["deliveries"]} == {"pending"}
    assert {d["event_id"] for d in event["deliveries"]} == {answer["id"]}

    await container.dispatcher.run_until_idle()
    event = await get_json(client, f"/v1/events/{answer['id']}")
    assert {d["status"] for d in event["deliveries"]} == {"succeeded"}
    assert {d["attempts"] for d in event["deliveries"]} == {1}


async def test_an_event_id_is_read_back_exactly(client: httpx.AsyncClient) -> None:
    await publish(client, id="Order:77.a_b-c")
    assert (await get_json(client, "/v1/events/Order:77.a_b-c"))["id"] == "Order:77.a_b-c"
    assert_error(await client.get("/v1/events/order:77.a_b-c"), 404, "NOT_FOUND")


async def test_getting_an_event_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/events/evt_missing")
    assert_error(r, 404, "NOT_FOUND")
