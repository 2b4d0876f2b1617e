"""The dispatcher against real receivers on 127.0.0.1, with a compressed clock."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from croupier.bootstrap import Container
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.domain.clock import ManualClock
from croupier.domain.network import AddressPolicy
from tests.support.receiver import Receiver, Reply

TYPE = "PLAYER_OPTED_IN"

#: The receivers of these tests listen on 127.0.0.1.
LOOPBACK = AddressPolicy(allow_loopback=True)


def data(n: int = 0) -> dict[str, Any]:
    return {"player_id": f"p{n}", "campaign_id": "c1", "event_type": TYPE, "n": n}


async def make_endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await client.post("/v1/endpoints", json={"url": url, "event_types": [TYPE], **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def publish(client: httpx.AsyncClient, n: int = 0, **fields: Any) -> str:
    r = await client.post("/v1/events", json={"type": TYPE, "data": data(n), **fields})
    assert r.status_code == 202, r.text
    event_id: str = r.json()["id"]
    return event_id


async def deliveries(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/deliveries", params={"limit": "500", **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


async def test_a_delivery_is_signed_verifiable_and_recorded(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await make_endpoint(client, receiver.url(), headers={"X-Operator-Key": "s3cret"})
    event_id = await publish(client, 1, ordering_key="p1")
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    Webhook(ep["secret"]).verify(req.body, req.headers)
    assert req.headers["webhook-id"] == event_id
    assert req.headers["x-operator-key"] == "s3cret"
    assert req.headers["user-agent"].startswith("Croupier-Webhooks/")
    body = orjson.loads(req.body)
    assert body["meta"]["attempt"] == 1
    assert body["data"] == data(1)
    [row] = await deliveries(client)
    assert row["status"] == "succeeded"
    detail = (await client.get(f"/v1/deliveries/{row['id']}")).json()
    [attempt] = detail["attempt_log"]
    assert attempt["status_code"] == 200
    assert attempt["response_body"] == "ok"
    # the endpoint's own header values are not kept in the attempt log
    assert attempt["request_headers"]["X-Operator-Key"] == "[redacted]"


async def test_failures_retry_on_the_schedule_then_succeed(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    replies = {0: Reply(500), 1: Reply(503), 2: Reply(200)}
    receiver = await Receiver.start(lambda _p, n: replies.get(n, Reply(200)))
    try:
        await make_endpoint(client, receiver.url(), retry_schedule=[0, 30, 120])
        await publish(client)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1
        clock.advance(29)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1, "nothing goes out before the schedule says so"
        clock.advance(1)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 2
        clock.advance(120)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 3
        assert [orjson.loads(r.body)["meta"]["attempt"] for r in receiver.requests] == [1, 2, 3]
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        [row] = await deliveries(client)
        assert (row["status"], row["attempts"]) == ("succeeded", 3)
    finally:
        await receiver.stop()


async def test_a_delivery_that_fails_every_attempt_ends_dead(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(500, "boom"))
    try:
        await make_endpoint(client, receiver.url(), retry_schedule=[0, 10, 10])
        await publish(client)
        for _ in range(5):
            await container.dispatcher.run_until_idle()
            clock.advance(10)
        assert len(receiver.requests) == 3
        [row] = await deliveries(client, status="dead")
        assert row["attempts"] == 3
        assert row["last_status_code"] == 500
        assert row["next_attempt_at"] is None
    finally:
        await receiver.stop()


async def test_410_gone_disables_the_endpoint_and_stops_its_deliveries(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(410))
    try:
        ep = await make_endpoint(client, receiver.url(), retry_schedule=[0, 1, 1])
        await publish(client, 1)
        await container.dispatcher.run_until_idle()
        got = (await client.get(f"/v1/endpoints/{ep['id']}")).json()
        assert got["disabled"] is True
        assert "410" in got["disabled_reason"]
        clock.advance(60)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1
        # re-enabling resumes the delivery that was waiting
        await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": False})
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 2
    finally:
        await receiver.stop()


async def test_retry_after_on_429_moves_the_next_try_later(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    replies = {0: Reply(429, headers={"Retry-After": "300"})}
    receiver = await Receiver.start(lambda _p, n: replies.get(n, Reply(200)))
    try:
        await make_endpoint(client, receiver.url(), retry_schedule=[0, 30])
        await publish(client)
        await container.dispatcher.run_until_idle()
        clock.advance(31)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1
        clock.advance(270)
        await container.dispatcher.run_until_idle()
        assert len(receiver.requests) == 2
    finally:
        await receiver.stop()


async def test_redirects_are_not_followed(client: httpx.AsyncClient, container: Container) -> None:
    receiver = await Receiver.start(
        lambda path, _n: (
            Reply(302, headers={"Location": "/elsewhere"}) if path == "/hook" else Reply()
        )
    )
    try:
        await make_endpoint(client, receiver.url("/hook"), retry_schedule=[0])
        await publish(client)
        await container.dispatcher.run_until_idle()
        assert [r.path for r in receiver.requests] == ["/hook"]
        [row] = await deliveries(client)
        assert (row["status"], row["last_status_code"]) == ("dead", 302)
    finally:
        await receiver.stop()


async def test_a_timeout_and_a_refused_connection_are_failures_with_a_reason(
    client: httpx.AsyncClient, container: Container
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(delay_s=2.0))
    try:
        await make_endpoint(client, receiver.url("/slow"), retry_schedule=[0], timeout_ms=200)
        await make_endpoint(client, "http://127.0.0.1:9/closed", retry_schedule=[0])
        await publish(client)
        await container.dispatcher.run_until_idle()
        rows = {r["endpoint_id"]: r for r in await deliveries(client)}
        errors = sorted(r["last_error"] for r in rows.values())
        assert errors[0].startswith("connection failed")
        assert errors[1].startswith("timeout")
        assert all(r["status"] == "dead" for r in rows.values())
    finally:
        await receiver.stop()


async def test_an_ordered_endpoint_keeps_publish_order_per_key_while_other_keys_flow(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    keys = ["A", "A", "B", "A", "B"]
    failed: set[int] = set()
    receiver = await Receiver.start()

    def fail_a0_once(path: str, _n: int) -> Reply:
        n = orjson.loads(receiver.requests[-1].body)["data"]["n"]
        if path == "/ordered" and n == 0 and n not in failed:
            failed.add(n)
            return Reply(500)
        return Reply()

    receiver.script = fail_a0_once
    try:
        await make_endpoint(client, receiver.url("/ordered"), ordered=True, retry_schedule=[0, 5])
        await make_endpoint(client, receiver.url("/plain"), retry_schedule=[0, 5])
        for n, key in enumerate(keys):
            await publish(client, n, ordering_key=key)

        def arrivals(path: str, key: str) -> list[int]:
            ns = [orjson.loads(r.body)["data"]["n"] for r in receiver.at(path)]
            return [n for n in ns if keys[n] == key]

        await container.dispatcher.run_until_idle()
        # A's head failed and waits for its retry: A's later events hold back, B flows in order
        assert arrivals("/ordered", "A") == [0]
        assert arrivals("/ordered", "B") == [2, 4]
        # an endpoint that is not ordered is not held back by anything
        assert sorted(arrivals("/plain", "A") + arrivals("/plain", "B")) == [0, 1, 2, 3, 4]
        clock.advance(5)
        await container.dispatcher.run_until_idle()
        assert arrivals("/ordered", "A") == [0, 0, 1, 3]
    finally:
        await receiver.stop()


async def test_a_slow_endpoint_does_not_delay_the_others(
    client: httpx.AsyncClient, container: Container
) -> None:
    receiver = await Receiver.start(
        lambda path, _n: Reply(delay_s=3.0) if path == "/slow" else Reply()
    )
    try:
        await make_endpoint(client, receiver.url("/slow"), timeout_ms=5000)
        await make_endpoint(client, receiver.url("/fast"))
        await container.dispatcher.start()
        started = time.monotonic()
        for n in range(40):
            await publish(client, n)
        await receiver.wait_for(40, path="/fast", within_s=10)
        fast_done = time.monotonic() - started
        assert len(receiver.at("/fast")) == 40
        assert fast_done < 2.0, f"healthy endpoint took {fast_done:.2f}s behind a slow one"
        assert len(receiver.at("/slow")) >= 1
    finally:
        await container.dispatcher.stop(drain_s=0.1)
        await receiver.stop()


async def test_the_background_dispatcher_delivers_soon_after_publish(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await make_endpoint(client, receiver.url())
    await container.dispatcher.start()
    try:
        t0 = time.monotonic()
        await publish(client)
        await receiver.wait_for(1, within_s=5)
        assert time.monotonic() - t0 < 1.0
    finally:
        await container.dispatcher.stop()
    [row] = await deliveries(client)
    assert row["status"] == "succeeded"


async def test_an_endpoint_at_its_share_is_refilled_as_its_sends_finish_not_at_the_next_poll(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await make_endpoint(client, receiver.url())
    for n in range(20):
        await publish(client, n)
    # Two in flight and four held for the endpoint; a poll too far off to be what refills it.
    dispatcher = Dispatcher(
        container.dispatcher.queue,
        clock=clock,
        config=DispatcherConfig(
            endpoint_max_in_flight=2, idle_poll_s=60.0, address_policy=LOOPBACK
        ),
    )
    await dispatcher.start()
    try:
        await receiver.wait_for(20, within_s=10)
    finally:
        await dispatcher.stop(drain_s=1)
    assert {r["status"] for r in await deliveries(client)} == {"succeeded"}


class CountingQueue:
    """The real queue, counting how claims reach the store."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.inner, name)


async def test_a_refill_rides_in_the_transaction_that_records_the_outcomes(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, receiver: Receiver
) -> None:
    await make_endpoint(client, receiver.url("/a"))
    await make_endpoint(client, receiver.url("/b"))
    event_ids = {await publish(client, n) for n in range(60)}
    queue = CountingQueue(container.dispatcher.queue)
    # Four held per endpoint against 120 deliveries: nearly every refill follows a record.
    dispatcher = Dispatcher(
        queue,
        clock=clock,
        config=DispatcherConfig(
            endpoint_max_in_flight=1, idle_poll_s=60.0, address_policy=LOOPBACK
        ),
    )
    await dispatcher.start()
    try:
        await receiver.wait_for(120, within_s=20)
    finally:
        await dispatcher.stop(drain_s=1)
    assert queue.calls["record_and_claim"] >= 10, queue.calls
    arrived = Counter((r.path, r.headers["webhook-id"]) for r in receiver.requests)
    assert set(arrived) == {(p, e) for p in ("/a", "/b") for e in event_ids}
    assert max(arrived.values()) == 1, "a combined claim must never send a delivery twice"
    rows = await deliveries(client)
    assert len(rows) == 120 and {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}


async def test_publishing_while_every_endpoint_is_full_loses_no_wake_up(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(delay_s=0.005))
    try:
        await make_endpoint(client, receiver.url("/a"))
        await make_endpoint(client, receiver.url("/b"))
        # Four held per endpoint and a poll too far off to rescue a skipped claim: every
        # event published mid-stream must reach both endpoints through refills or wakes.
        dispatcher = Dispatcher(
            container.dispatcher.queue,
            clock=clock,
            config=DispatcherConfig(
                endpoint_max_in_flight=1, idle_poll_s=60.0, address_policy=LOOPBACK
            ),
        )
        # Publishes announce themselves to this dispatcher, as under serve.
        container.publish.on_published = dispatcher.notify
        await dispatcher.start()
        try:
            event_ids = set()
            for n in range(40):
                event_ids.add(await publish(client, n))
                if n % 8 == 0:
                    await asyncio.sleep(0.01)
            await receiver.wait_for(80, within_s=20)
        finally:
            await dispatcher.stop(drain_s=1)
        arrived = Counter((r.path, r.headers["webhook-id"]) for r in receiver.requests)
        assert set(arrived) == {(p, e) for p in ("/a", "/b") for e in event_ids}
        assert max(arrived.values()) == 1
    finally:
        await receiver.stop()
