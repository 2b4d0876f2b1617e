"""The delivery controls in a live run, with the dispatcher's loops going and time
compressed: the breaker opens on a failing receiver and closes when it recovers, and an
endpoint that never succeeds is disabled after five (compressed) days, with its notice
delivered to the tenant's own endpoint."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import orjson

from croupier.bootstrap import Container
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.domain.clock import ScaledClock
from croupier.domain.network import AddressPolicy
from croupier.domain.retry import RetryPolicy
from tests.integration.conftest import list_all
from tests.support.receiver import Receiver, Reply

TYPE = "PLAYER_OPTED_IN"
LOOPBACK = AddressPolicy(allow_loopback=True)
DAY = 86_400


def live(container: Container, scale: float) -> Dispatcher:
    return Dispatcher(
        container.dispatcher.queue,
        clock=ScaledClock(scale),
        config=DispatcherConfig(
            address_policy=LOOPBACK, idle_poll_s=0.05, retry=RetryPolicy(jitter=0), time_scale=scale
        ),
    )


async def create(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("event_types", [TYPE])
    r = await client.post("/v1/endpoints", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def publish(client: httpx.AsyncClient, n: int) -> str:
    data = {"player_id": f"p{n}", "campaign_id": "c1", "event_type": TYPE}
    r = await client.post("/v1/events", json={"type": TYPE, "data": data})
    assert r.status_code == 202, r.text
    event_id: str = r.json()["id"]
    return event_id


async def test_the_breaker_opens_on_a_failing_receiver_and_closes_when_it_recovers(
    client: httpx.AsyncClient, container: Container
) -> None:
    # The receiver's clock: it stamps each request with time.time(). It fails until 1.5 s
    # after the dispatcher starts.
    recovers_at = float("inf")
    receiver = await Receiver.start(
        lambda _p, _n: Reply(200 if time.time() >= recovers_at else 500)
    )
    try:
        ep = await create(
            client,
            receiver.url(),
            retry_schedule=[0, 30, 60, 120, 240],
            breaker={"consecutive_failures": 5, "cooldown_s": 30},
        )
        event_ids = {await publish(client, n) for n in range(40)}
        d = live(container, 100)  # a 30 s cooldown lasts 0.3 s
        recovers_at = time.time() + 1.5
        await d.start()
        states: Counter[str] = Counter()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = (await client.get(f"/v1/endpoints/{ep['id']}")).json()
                states[got["breaker"]["state"]] += 1
                rows = await list_all(client, "/v1/deliveries", endpoint_id=ep["id"])
                if all(r["status"] == "succeeded" for r in rows) and len(rows) == 40:
                    break
                await asyncio.sleep(0.05)
        finally:
            await d.stop()
        assert states["open"] > 0, states
        got = (await client.get(f"/v1/endpoints/{ep['id']}")).json()
        assert got["breaker"]["state"] == "closed"
        assert got["failing_since"] is None
        ok = [orjson.loads(r.body)["id"] for r in receiver.requests if r.at >= recovers_at]
        # Every event arrived once it recovered: nothing lost, none sent twice after.
        assert sorted(ok) == sorted(event_ids)
        # While it failed (1.5 s: five cooldowns, the schedule's first three retries), the
        # breaker held back what its schedule alone would have sent, about three tries per
        # event: what went was the first waves in flight before it opened, and a probe
        # per cooldown.
        failed = [r for r in receiver.requests if r.at < recovers_at]
        assert len(failed) < 2 * 40, len(failed)
    finally:
        await receiver.stop()


async def test_an_endpoint_that_never_succeeds_is_disabled_after_five_compressed_days(
    client: httpx.AsyncClient, container: Container
) -> None:
    receiver = await Receiver.start(lambda p, _n: Reply(503 if p == "/down" else 200))
    try:
        down = await create(client, receiver.url("/down"), retry_schedule=[0] + [DAY] * 8)
        await create(client, receiver.url("/ops"), event_types=["endpoint.disabled"])
        await publish(client, 1)
        d = live(container, 100_000)  # a day lasts 0.864 s
        await d.start()
        try:
            await receiver.wait_for(1, path="/ops", within_s=30)
        finally:
            await d.stop()
        got = (await client.get(f"/v1/endpoints/{down['id']}")).json()
        assert got["disabled"] is True
        assert got["disabled_reason"] == "no successful delivery for 5 days"
        notice = orjson.loads(receiver.at("/ops")[0].body)
        assert notice["type"] == "endpoint.disabled"
        assert notice["data"]["reason"] == "failing"
        # Tried on its schedule until then: the first try and one a day, five days on.
        assert 6 <= len(receiver.at("/down")) <= 7
    finally:
        await receiver.stop()
