"""Delivery under stress, per endpoint and across them, on a manual clock: the rate limit,
the concurrency cap, the circuit breaker, auto-disable and its notices, the cap on retries,
and the overload mode that pauses non-core types."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import orjson

from croupier.bootstrap import Container
from croupier.dispatch.dispatcher import HELD_PER_SLOT, Dispatcher, DispatcherConfig
from croupier.domain.clock import ManualClock, SystemClock
from croupier.domain.network import AddressPolicy
from croupier.domain.retry import RetryPolicy
from tests.integration.conftest import assert_error, get_json, list_all
from tests.support.receiver import Receiver, Reply

LOOPBACK = AddressPolicy(allow_loopback=True)
NON_CORE = "PLAYER_OPTED_IN"
CORE = "player.suspended"


def opt_in(n: int) -> dict[str, Any]:
    return {"player_id": f"p{n}", "campaign_id": "c1", "event_type": NON_CORE}


def suspended(n: int) -> dict[str, Any]:
    return {"playerId": f"p{n}", "reason": "kyc_pending"}


async def endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("event_types", [NON_CORE])
    r = await client.post("/v1/endpoints", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def publish(client: httpx.AsyncClient, n: int, event_type: str = NON_CORE) -> str:
    data = opt_in(n) if event_type == NON_CORE else suspended(n)
    r = await client.post("/v1/events", json={"type": event_type, "data": data})
    assert r.status_code == 202, r.text
    event_id: str = r.json()["id"]
    return event_id


async def statuses(client: httpx.AsyncClient, endpoint_id: str) -> Counter[str]:
    rows = await list_all(client, "/v1/deliveries", endpoint_id=endpoint_id)
    return Counter(row["status"] for row in rows)


def dispatcher(container: Container, clock: ManualClock, **config: Any) -> Dispatcher:
    return Dispatcher(
        container.dispatcher.queue,
        clock=clock,
        # No jitter: the tests move the clock to the very retry times of the schedules.
        config=DispatcherConfig(
            address_policy=LOOPBACK, overload_check_s=0.0, retry=RetryPolicy(jitter=0), **config
        ),
    )


# -- the API ---------------------------------------------------------------------------------


async def test_an_endpoint_shows_its_controls_and_its_breaker_with_their_defaults(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    ep = await endpoint(client, receiver.url())
    assert ep["rate_limit_per_s"] is None
    assert ep["max_in_flight"] is None
    assert ep["breaker"] == {
        "consecutive_failures": 10,
        "failure_rate": 0.5,
        "window_s": 60,
        "min_requests": 20,
        "cooldown_s": 30,
        "state": "closed",
        "failures_in_a_row": 0,
        "opened_at": None,
        "until": None,
    }
    assert ep["failing_since"] is None


async def test_controls_are_set_on_create_changed_by_patch_and_reset_by_null(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    ep = await endpoint(
        client,
        receiver.url(),
        rate_limit_per_s=2.5,
        max_in_flight=3,
        breaker={"consecutive_failures": 4, "cooldown_s": 10},
    )
    assert (ep["rate_limit_per_s"], ep["max_in_flight"]) == (2.5, 3)
    assert ep["breaker"]["consecutive_failures"] == 4
    assert ep["breaker"]["failure_rate"] == 0.5
    r = await client.patch(
        f"/v1/endpoints/{ep['id']}", json={"rate_limit_per_s": 100, "breaker": None}
    )
    assert r.status_code == 200, r.text
    assert r.json()["rate_limit_per_s"] == 100
    assert r.json()["breaker"]["consecutive_failures"] == 10
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"max_in_flight": None})
    assert r.json()["max_in_flight"] is None
    assert r.json()["rate_limit_per_s"] == 100


async def test_controls_out_of_range_are_refused_with_the_field_named(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rate_limit_per_s": 0}, "rate_limit_per_s"),
        ({"rate_limit_per_s": True}, "rate_limit_per_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 5000}, "max_in_flight"),
        ({"breaker": {"cooldown_s": 0}}, "breaker.cooldown_s"),
        ({"breaker": {"failure_rate": 2}}, "breaker.failure_rate"),
        ({"breaker": {"consecutive_failures": 1.5}}, "breaker.consecutive_failures"),
        ({"breaker": {"colour": "red"}}, "breaker"),
    ]
    for fields, field in cases:
        r = await client.post("/v1/endpoints", json={"url": receiver.url(), **fields})
        body = assert_error(r, 422, "VALIDATION_FAILED")
        assert str(body.get("field", "")).startswith(field), (fields, body)


# -- rate limit and concurrency --------------------------------------------------------------


async def test_a_rate_limited_endpoint_gets_no_more_than_its_rate_and_spends_no_attempt(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    ep = await endpoint(client, receiver.url(), rate_limit_per_s=10)
    for n in range(12):
        await publish(client, n)
    d = dispatcher(container, clock)
    # A full bucket holds a fifth of a second: 2 deliveries.
    await d.run_until_idle()
    assert len(receiver.requests) == 2
    for _ in range(5):
        clock.advance(0.2)
        await d.run_until_idle()
    # One second more, ten more: never more than the rate.
    assert len(receiver.requests) == 12
    rows = await list_all(client, "/v1/deliveries", endpoint_id=ep["id"])
    assert {row["attempts"] for row in rows} == {1}


async def test_waiting_for_the_rate_limit_does_not_hold_back_other_endpoints(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await endpoint(client, receiver.url("/slow"), rate_limit_per_s=1)
    await endpoint(client, receiver.url("/fast"))
    for n in range(10):
        await publish(client, n)
    await dispatcher(container, clock).run_until_idle()
    assert len(receiver.at("/fast")) == 10
    assert len(receiver.at("/slow")) == 1


async def test_an_endpoints_own_max_in_flight_bounds_its_concurrent_requests(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(200, delay_s=0.05))
    try:
        await endpoint(client, receiver.url(), max_in_flight=2)
        for n in range(12):
            await publish(client, n)
        await dispatcher(container, clock).run_until_idle()
        assert len(receiver.requests) == 12
        assert receiver.max_concurrent == 2
    finally:
        await receiver.stop()


# -- circuit breaker -------------------------------------------------------------------------


async def test_the_breaker_opens_after_failures_in_a_row_and_deliveries_wait_unspent(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    healthy = False
    receiver = await Receiver.start(lambda _p, _n: Reply(200 if healthy else 500))
    try:
        ep = await endpoint(
            client,
            receiver.url(),
            max_in_flight=1,
            breaker={"consecutive_failures": 3, "cooldown_s": 30},
        )
        for n in range(10):
            await publish(client, n)
        d = dispatcher(container, clock)
        await d.run_until_idle()
        # What was held for the endpoint when the breaker opened had been sent; no more.
        sent = len(receiver.requests)
        assert 3 <= sent <= HELD_PER_SLOT
        got = await get_json(client, f"/v1/endpoints/{ep['id']}")
        assert got["breaker"]["state"] == "open"
        assert got["breaker"]["failures_in_a_row"] == sent
        rows = await list_all(client, "/v1/deliveries", endpoint_id=ep["id"])
        assert sum(row["attempts"] == 0 for row in rows) == 10 - sent

        # Before the cooldown is over nothing goes, even the retries that are due.
        clock.advance(29)
        await d.run_until_idle()
        assert len(receiver.requests) == sent

        # After it, one probe; it fails, so the breaker opens for another cooldown.
        clock.advance(2)
        await d.run_until_idle()
        assert len(receiver.requests) == sent + 1
        got = await get_json(client, f"/v1/endpoints/{ep['id']}")
        assert got["breaker"]["state"] == "open"

        # The endpoint is back: the next probe closes the breaker and everything flows.
        healthy = True
        clock.advance(31)
        await d.run_until_idle()
        got = await get_json(client, f"/v1/endpoints/{ep['id']}")
        assert got["breaker"]["state"] == "closed"
        assert got["breaker"]["failures_in_a_row"] == 0
        rows = await list_all(client, "/v1/deliveries", endpoint_id=ep["id"])
        assert Counter(r["status"] for r in rows) == Counter(succeeded=10)
    finally:
        await receiver.stop()


async def test_the_breaker_opens_on_the_failure_rate_over_its_window(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    # Every other request fails: never two in a row, but half of the window.
    receiver = await Receiver.start(lambda _p, n: Reply(500 if n % 2 else 200))
    try:
        ep = await endpoint(
            client,
            receiver.url(),
            breaker={"failure_rate": 0.5, "min_requests": 10, "window_s": 60},
        )
        for n in range(30):
            await publish(client, n)
        await dispatcher(container, clock).run_until_idle()
        got = await get_json(client, f"/v1/endpoints/{ep['id']}")
        assert got["breaker"]["state"] == "open"
        assert got["breaker"]["failures_in_a_row"] <= 1
    finally:
        await receiver.stop()


async def test_a_breaker_opened_for_one_endpoint_leaves_the_others_alone(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda p, _n: Reply(500 if p == "/down" else 200))
    try:
        down = await endpoint(client, receiver.url("/down"), breaker={"consecutive_failures": 2})
        up = await endpoint(client, receiver.url("/up"))
        for n in range(20):
            await publish(client, n)
        await dispatcher(container, clock).run_until_idle()
        assert (await get_json(client, f"/v1/endpoints/{down['id']}"))["breaker"]["state"] == "open"
        assert (await statuses(client, up["id"]))["succeeded"] == 20
    finally:
        await receiver.stop()


# -- auto-disable and notices ----------------------------------------------------------------


async def test_an_endpoint_failing_for_five_days_is_disabled_and_the_tenant_is_told(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda p, _n: Reply(503 if p == "/down" else 200))
    try:
        day = 86_400
        down = await endpoint(client, receiver.url("/down"), retry_schedule=[0, 3 * day, 3 * day])
        ops = await endpoint(client, receiver.url("/ops"), event_types=["endpoint.disabled"])
        await publish(client, 1)
        d = dispatcher(container, clock)
        await d.run_until_idle()
        got = await get_json(client, f"/v1/endpoints/{down['id']}")
        assert got["failing_since"] is not None
        assert got["disabled"] is False
        clock.advance(3 * day + 3600)
        await d.run_until_idle()
        assert (await get_json(client, f"/v1/endpoints/{down['id']}"))["disabled"] is False
        clock.advance(3 * day + 3600)
        await d.run_until_idle()
        got = await get_json(client, f"/v1/endpoints/{down['id']}")
        assert got["disabled"] is True
        assert got["disabled_reason"] == "no successful delivery for 5 days"
        [notice] = receiver.at("/ops")
        body = orjson.loads(notice.body)
        assert body["type"] == "endpoint.disabled"
        assert body["data"]["endpoint_id"] == down["id"]
        assert body["data"]["reason"] == "failing"
        assert (await statuses(client, ops["id"]))["succeeded"] == 1
    finally:
        await receiver.stop()


async def test_a_410_disables_the_endpoint_and_publishes_endpoint_disabled(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda p, _n: Reply(410 if p == "/gone" else 200))
    try:
        gone = await endpoint(client, receiver.url("/gone"))
        await endpoint(client, receiver.url("/ops"), event_types=["endpoint.disabled"])
        await publish(client, 1)
        await dispatcher(container, clock).run_until_idle()
        got = await get_json(client, f"/v1/endpoints/{gone['id']}")
        assert got["disabled"] is True
        assert got["disabled_at"] is not None
        [notice] = receiver.at("/ops")
        assert orjson.loads(notice.body)["data"]["reason"] == "gone"
    finally:
        await receiver.stop()


async def test_a_dead_delivery_publishes_delivery_dead_but_a_dead_notice_does_not(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(500))
    try:
        down = await endpoint(client, receiver.url("/down"), retry_schedule=[0, 1])
        # It takes the notices too, and fails them: they die without a notice of their own.
        await client.patch(
            f"/v1/endpoints/{down['id']}", json={"event_types": [NON_CORE, "delivery.dead"]}
        )
        event_id = await publish(client, 1)
        d = dispatcher(container, clock)
        for _ in range(6):
            await d.run_until_idle()
            clock.advance(2)
        events = await list_all(client, "/v1/events", type="delivery.dead")
        assert len(events) == 1
        detail = await get_json(client, f"/v1/events/{events[0]['id']}")
        assert detail["data"]["event_id"] == event_id
        assert detail["data"]["attempts"] == 2
        assert detail["data"]["last_status_code"] == 500
        assert (await statuses(client, down["id"])) == Counter(dead=2)
    finally:
        await receiver.stop()


async def test_enabling_an_endpoint_again_resets_its_health(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(410))
    try:
        ep = await endpoint(client, receiver.url())
        await publish(client, 1)
        await dispatcher(container, clock).run_until_idle()
        assert (await get_json(client, f"/v1/endpoints/{ep['id']}"))["disabled"] is True
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": False})
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["disabled"], got["disabled_at"], got["failing_since"]) == (False, None, None)
        assert got["breaker"]["state"] == "closed"
    finally:
        await receiver.stop()


# -- global controls -------------------------------------------------------------------------


async def test_retries_are_capped_across_endpoints_and_first_attempts_go_first(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    failing = True
    receiver = await Receiver.start(lambda _p, _n: Reply(500 if failing else 200))
    try:
        ep = await endpoint(
            client,
            receiver.url(),
            retry_schedule=[0, 1, 1],
            breaker={"consecutive_failures": 1000, "min_requests": 1000},
        )
        for n in range(10):
            await publish(client, n)
        d = dispatcher(container, clock, max_retries_in_flight=3)
        await d.run_until_idle()
        assert len(receiver.requests) == 10
        failing = False
        clock.advance(2)
        fresh = {await publish(client, 100 + n) for n in range(5)}
        queue = container.dispatcher.queue
        claimed = await queue.claim(
            "test",
            now_ms=clock.now_ms(),
            limit=100,
            lease_ms=60_000,
            rooms={},
            default_room=64,
            retry_room=3,
        )
        retries = [c for c in claimed.claims if c.attempts > 0]
        firsts = {c.event.id for c in claimed.claims if c.attempts == 0}
        assert firsts == fresh
        assert len(retries) == 3
        assert ep["id"] == claimed.claims[0].endpoint_id
    finally:
        await receiver.stop()


async def test_overload_pauses_non_core_types_keeps_them_and_resumes_when_drained(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await endpoint(client, receiver.url("/all"), event_types=[NON_CORE, CORE])
    for n in range(8):
        await publish(client, n, NON_CORE)
    for n in range(3):
        await publish(client, n, CORE)
    d = dispatcher(container, clock, overload_backlog=5)
    await d.run_until_idle()
    # 11 due > 5: overloaded, so the core type went first and the rest was kept; once the
    # core backlog was drained (under half the threshold), the paused types resumed.
    types = [orjson.loads(r.body)["type"] for r in receiver.requests]
    assert types == [CORE] * 3 + [NON_CORE] * 8
    assert not d.overloaded


async def test_overload_lasts_while_core_work_waits_even_for_its_rate_limit(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await endpoint(client, receiver.url("/noncore"), event_types=[NON_CORE])
    # The core work drains at one delivery per second.
    await endpoint(client, receiver.url("/core"), event_types=[CORE], rate_limit_per_s=1)
    for n in range(4):
        await publish(client, n, NON_CORE)
    for n in range(6):
        await publish(client, n, CORE)
    d = dispatcher(container, clock, overload_backlog=5)
    await d.run_until_idle()
    assert d.overloaded
    assert (len(receiver.at("/core")), len(receiver.at("/noncore"))) == (1, 0)
    for _ in range(4):
        clock.advance(1)
        await d.run_until_idle()
    # One core delivery still waits for its token: still paused.
    assert d.overloaded
    assert (len(receiver.at("/core")), len(receiver.at("/noncore"))) == (5, 0)
    clock.advance(1)
    await d.run_until_idle()
    # The core backlog has drained: the paused types resume.
    assert not d.overloaded
    assert (len(receiver.at("/core")), len(receiver.at("/noncore"))) == (6, 4)


async def test_the_stats_show_the_breaker_state_and_counters(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(500))
    try:
        ep = await endpoint(client, receiver.url(), breaker={"consecutive_failures": 2})
        for n in range(3):
            await publish(client, n)
        await dispatcher(container, clock).run_until_idle()
        stats = await get_json(client, f"/v1/endpoints/{ep['id']}/stats")
        assert stats["breaker"]["state"] == "open"
        assert stats["breaker"]["failures_in_a_row"] == 3
        assert stats["failing_since"] is not None
        assert stats["windows"]["5m"]["failed"] == 3
    finally:
        await receiver.stop()


async def test_enabling_with_replay_missed_sends_what_died_and_what_was_published_meanwhile(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    healthy = False
    receiver = await Receiver.start(lambda _p, _n: Reply(200 if healthy else 500))
    try:
        ep = await endpoint(client, receiver.url(), retry_schedule=[0])
        died = {await publish(client, n) for n in range(2)}
        d = dispatcher(container, clock)
        await d.run_until_idle()
        assert await statuses(client, ep["id"]) == Counter(dead=2)
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": True})
        assert r.status_code == 200, r.text
        clock.advance(60)
        missed = {await publish(client, 10 + n) for n in range(3)}
        # Disabled: the new events got no delivery for it.
        assert sum((await statuses(client, ep["id"])).values()) == 2
        healthy = True
        clock.advance(60)
        r = await client.post(f"/v1/endpoints/{ep['id']}/enable", json={"replay_missed": True})
        assert r.status_code == 200, r.text
        assert r.json()["disabled"] is False
        assert r.json()["replayed"] == 5
        await d.run_until_idle()
        ids = {orjson.loads(req.body)["id"] for req in receiver.requests[2:]}
        assert ids == died | missed
        assert await statuses(client, ep["id"]) == Counter(succeeded=5)
        # Enabling again replays nothing twice.
        r = await client.post(f"/v1/endpoints/{ep['id']}/enable", json={"replay_missed": True})
        assert r.json()["replayed"] == 0
    finally:
        await receiver.stop()


async def test_enabling_without_replay_sends_nothing_old(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    ep = await endpoint(client, receiver.url(), disabled=True)
    await publish(client, 1)
    r = await client.post(f"/v1/endpoints/{ep['id']}/enable")
    assert (r.status_code, r.json()["replayed"]) == (200, 0)
    await dispatcher(container, clock).run_until_idle()
    assert receiver.requests == []
    r = await client.post("/v1/endpoints/ep_nope/enable")
    assert_error(r, 404, "NOT_FOUND")


async def test_when_the_breaker_opens_what_was_held_for_the_endpoint_goes_back_unsent(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(500, delay_s=0.05))
    try:
        ep = await endpoint(
            client, receiver.url(), max_in_flight=4, breaker={"consecutive_failures": 2}
        )
        for n in range(3 * HELD_PER_SLOT * 4):
            await publish(client, n)
        d = dispatcher(container, clock, idle_poll_s=60.0)
        await d.start()
        try:
            for _ in range(100):
                got = await get_json(client, f"/v1/endpoints/{ep['id']}")
                if got["breaker"]["state"] == "open":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            await d.stop()
        assert got["breaker"]["state"] == "open"
        # Four in flight when the first failures were recorded, and the four the workers
        # took next: the rest of what was held (16) went back without an attempt.
        assert len(receiver.requests) < HELD_PER_SLOT * 4
        rows = await list_all(client, "/v1/deliveries", endpoint_id=ep["id"])
        assert sum(row["attempts"] for row in rows) == len(receiver.requests)
        assert all(row["status"] in ("pending", "failed") for row in rows)
    finally:
        await receiver.stop()


async def test_the_rate_limit_holds_within_ten_percent_in_real_time(
    client: httpx.AsyncClient, container: Container
) -> None:
    receiver = await Receiver.start()
    try:
        rate = 25.0
        await endpoint(client, receiver.url(), rate_limit_per_s=rate)
        for n in range(80):
            await publish(client, n)
        d = Dispatcher(
            container.dispatcher.queue,
            clock=SystemClock(),
            config=DispatcherConfig(address_policy=LOOPBACK, idle_poll_s=5.0),
        )
        await d.start()
        try:
            await receiver.wait_for(80, within_s=20)
        finally:
            await d.stop()
        times = sorted(r.at for r in receiver.requests)
        # After the first bucket (a fifth of a second's worth), one per 1/rate seconds.
        burst = int(rate * 0.2)
        achieved = (len(times) - burst) / (times[-1] - times[burst - 1])
        assert rate * 0.9 <= achieved <= rate * 1.1, achieved
    finally:
        await receiver.stop()
