"""The dispatcher with a sender child process, against real receivers on 127.0.0.1.

The store and the API are the in-process test container's; only the sending happens in a
child (``python -m croupier.dispatch.child``), as under ``croupier serve``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from croupier.bootstrap import Container
from croupier.dispatch.courier import EndpointSpec, Job
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.dispatch.transport import CHILD_MODULE, ProcessTransport, SenderPool, Transport
from croupier.dispatch.wire import encode_frame, endpoint_to_wire, job_to_wire
from croupier.domain.clock import ManualClock
from croupier.domain.events import Event
from croupier.domain.network import AddressPolicy
from tests.integration.test_dispatcher import deliveries, make_endpoint, publish
from tests.support.receiver import Receiver, Reply

DispatcherFactory = Callable[..., tuple[Dispatcher, ProcessTransport]]
PoolFactory = Callable[..., tuple[Dispatcher, SenderPool]]
Dispatchers = Callable[[Transport, DispatcherConfig], Dispatcher]

LOOPBACK = AddressPolicy(allow_loopback=True)


@pytest.fixture
async def dispatchers(container: Container, clock: ManualClock) -> AsyncIterator[Dispatchers]:
    """``dispatchers(transport, config)``: a dispatcher over the test store that sends
    through ``transport``; every one is stopped after the test."""
    made: list[Dispatcher] = []

    def make(transport: Transport, settings: DispatcherConfig) -> Dispatcher:
        dispatcher = Dispatcher(
            container.dispatcher.queue,
            clock=clock,
            config=settings,
            rng=random.Random(7),
            transport=transport,
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.stop(drain_s=0)


@pytest.fixture
def with_child(dispatchers: Dispatchers) -> DispatcherFactory:
    """``dispatcher, transport = with_child(**config)``: sending happens in a child process."""

    def make(**config: Any) -> tuple[Dispatcher, ProcessTransport]:
        # The receivers of these tests listen on 127.0.0.1.
        settings = DispatcherConfig(**{"address_policy": LOOPBACK, **config})
        transport = ProcessTransport(settings.courier, log_level="warning")
        return dispatchers(transport, settings), transport

    return make


@pytest.fixture
def with_pool(dispatchers: Dispatchers) -> PoolFactory:
    """``dispatcher, pool = with_pool(processes, **config)``: sending happens in a pool."""

    def make(processes: int, **config: Any) -> tuple[Dispatcher, SenderPool]:
        # The receivers of these tests listen on 127.0.0.1.
        settings = DispatcherConfig(**{"address_policy": LOOPBACK, **config})
        pool = SenderPool(settings.courier, processes=processes, log_level="warning")
        return dispatchers(pool, settings), pool

    return make


async def until(condition: Callable[[], bool], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def all_succeeded(client: httpx.AsyncClient, count: int) -> None:
    """Until the recorder has caught up: exactly ``count`` deliveries, each succeeded."""
    for _ in range(200):
        rows = await deliveries(client)
        if len(rows) == count and {r["status"] for r in rows} == {"succeeded"}:
            return
        await asyncio.sleep(0.05)
    assert [r["status"] for r in rows] == ["succeeded"] * count


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_sender_child_sends_signed_requests_that_verify_and_are_recorded(
    client: httpx.AsyncClient, with_child: DispatcherFactory, receiver: Receiver
) -> None:
    dispatcher, transport = with_child()
    ep = await make_endpoint(client, receiver.url(), headers={"X-Operator-Key": "s3cret"})
    event_ids = [await publish(client, n, ordering_key=f"p{n}") for n in range(3)]
    assert await dispatcher.run_until_idle() == 3
    pid = transport.pid
    assert pid is not None and pid != os.getpid()
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(event_ids)
    for req in receiver.requests:
        Webhook(ep["secret"]).verify(req.body, req.headers)
        assert req.headers["x-operator-key"] == "s3cret"
        assert orjson.loads(req.body)["meta"]["attempt"] == 1
    rows = await deliveries(client)
    assert {r["status"] for r in rows} == {"succeeded"}
    detail = (await client.get(f"/v1/deliveries/{rows[0]['id']}")).json()
    [attempt] = detail["attempt_log"]
    assert attempt["status_code"] == 200
    assert attempt["request_headers"]["X-Operator-Key"] == "[redacted]"
    await transport.close()
    assert transport.returncode == 0
    assert gone(pid)


async def test_killing_the_sender_child_mid_batch_loses_no_delivery_and_it_is_replaced(
    client: httpx.AsyncClient, with_child: DispatcherFactory
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(delay_s=0.3))
    try:
        # A lease far longer than the test: the deliveries must come back by release.
        dispatcher, transport = with_child(lease_ms=600_000, max_in_flight=8)
        await make_endpoint(client, receiver.url())
        event_ids = {await publish(client, n) for n in range(40)}
        await dispatcher.start()
        await until(lambda: len(receiver.requests) >= 4, within_s=10, what="requests in flight")
        first = transport.pid
        assert first is not None
        killed_at = time.time()
        os.kill(first, signal.SIGKILL)
        await until(
            lambda: {r.headers["webhook-id"] for r in receiver.requests} == event_ids,
            within_s=20,
            what="every event, after the kill",
        )
        await all_succeeded(client, 40)
        assert transport.returncode == -signal.SIGKILL
        assert transport.pid not in (None, first)
        # What the dead child sent: requests it wrote before the kill may reach the receiver
        # a moment after it (on loopback, well within 0.2 s); its successor cannot send that
        # soon (the restart waits, then a new interpreter starts and connects).
        sent_by_dead = {
            r.headers["webhook-id"] for r in receiver.requests if r.at <= killed_at + 0.2
        }
        copies = Counter(r.headers["webhook-id"] for r in receiver.requests)
        repeated = {event_id for event_id, n in copies.items() if n > 1}
        assert repeated <= sent_by_dead, "only what the dead child had sent may come twice"
        assert max(copies.values()) <= 2
    finally:
        await receiver.stop()


async def test_a_graceful_stop_records_what_the_child_had_in_flight_and_the_child_exits_0(
    client: httpx.AsyncClient, with_child: DispatcherFactory
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(delay_s=0.5))
    try:
        dispatcher, transport = with_child()
        await make_endpoint(client, receiver.url())
        for n in range(3):
            await publish(client, n)
        await dispatcher.start()
        await until(lambda: len(receiver.requests) == 3, within_s=10, what="3 requests")
        pid = transport.pid
        assert pid is not None
        started = time.monotonic()
        await dispatcher.stop(drain_s=10)
        assert time.monotonic() - started < 5, "the drain ends when the sends do"
        rows = await deliveries(client)
        assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 3
        assert transport.returncode == 0
        assert gone(pid)
    finally:
        await receiver.stop()


async def test_the_sender_child_ignores_ctrl_c_and_exits_when_its_parent_end_closes() -> None:
    slow = await Receiver.start(lambda _p, _n: Reply(delay_s=3.0))
    ours, theirs = socket.socketpair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD_MODULE,
        "--fd",
        str(theirs.fileno()),
        "--max-in-flight",
        "4",
        "--endpoint-max-in-flight",
        "4",
        "--environment",
        "test",
        "--allow-loopback",
        "--log-level",
        "warning",
        pass_fds=(theirs.fileno(),),
        stdin=asyncio.subprocess.DEVNULL,
    )
    theirs.close()
    try:
        event = Event("evt_1", "ten_1", "PLAYER_OPTED_IN", "1.0.0", b"{}", 1, 1)
        spec = EndpointSpec("ep_1", 1, slow.url(), {}, 60_000, "standard", ("whsec_" + "A" * 32,))
        job = Job(1, "dlv_1", 1, "ep_1", 1, event)
        ours.sendall(encode_frame(([endpoint_to_wire(spec)], [job_to_wire(job)])))
        await slow.wait_for(1, within_s=10)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        assert proc.returncode is None, "Ctrl-C is the parent's to handle"
        # As when the parent dies: its end of the socket closes, with a request in flight.
        ours.close()
        closed_at = time.monotonic()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        assert time.monotonic() - closed_at < 1.5, "it must not wait for the request"
    finally:
        ours.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await slow.stop()


# -- a pool of sender processes ------------------------------------------------------------


class CountingReceiver:
    """Answers after ``delay_s``, and keeps the most requests it had in flight per path."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.ids: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.in_flight[request.path] += 1
        self.most[request.path] = max(self.most[request.path], self.in_flight[request.path])
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight[request.path] -= 1
        self.ids.append((request.path, request.headers["webhook-id"]))
        return web.Response(text="ok")


async def test_a_pool_of_two_senders_shares_the_work_and_keeps_each_endpoints_limit(
    client: httpx.AsyncClient, with_pool: PoolFactory
) -> None:
    receiver = CountingReceiver(delay_s=0.02)
    await receiver.start()
    try:
        dispatcher, pool = with_pool(2, max_in_flight=64, endpoint_max_in_flight=3)
        paths = [f"/ep{i}" for i in range(4)]
        for path in paths:
            await make_endpoint(client, receiver.url(path))
        event_ids = {await publish(client, n) for n in range(30)}
        jobs_per_child = [0, 0]
        for i, part in enumerate(pool._parts):
            original = part.submit

            def counted(batch: Any, i: int = i, original: Any = original) -> None:
                jobs_per_child[i] += len(batch)
                original(batch)

            part.submit = counted  # type: ignore[method-assign]
        await dispatcher.start()
        pids = pool.pids
        assert len(set(pids)) == 2 and os.getpid() not in pids
        await until(lambda: len(receiver.ids) >= 120, within_s=30, what="120 deliveries")
        assert sorted(receiver.ids) == sorted((p, e) for p in paths for e in event_ids)
        # Each endpoint's jobs go to one child at a time: its limit holds across the pool.
        assert max(receiver.most.values()) <= 3
        assert all(jobs_per_child), f"one child did all the work: {jobs_per_child}"
        await all_succeeded(client, 120)
        await dispatcher.stop(drain_s=5)
        assert all(gone(pid) for pid in pids)
    finally:
        await receiver.stop()


async def test_killing_one_sender_of_a_pool_loses_nothing_and_leaves_the_other_alone(
    client: httpx.AsyncClient, with_pool: PoolFactory
) -> None:
    receiver = CountingReceiver(delay_s=0.2)
    await receiver.start()
    try:
        dispatcher, pool = with_pool(2, lease_ms=600_000, max_in_flight=8)
        for path in ("/a", "/b"):
            await make_endpoint(client, receiver.url(path))
        event_ids = {await publish(client, n) for n in range(20)}
        await dispatcher.start()
        await until(lambda: sum(receiver.in_flight.values()) >= 4, within_s=10, what="sends")
        doomed, survivor = pool.pids
        os.kill(doomed, signal.SIGKILL)
        expected = {(p, e) for p in ("/a", "/b") for e in event_ids}
        await until(
            lambda: set(receiver.ids) >= expected, within_s=30, what="every delivery after kill"
        )
        assert survivor in pool.pids and not gone(survivor), "the other child lives on"
        assert len(pool.pids) == 2 and doomed not in pool.pids, "the dead one is replaced"
        await all_succeeded(client, 40)
        copies = Counter(receiver.ids)
        # Only requests in flight in the killed child may come twice.
        assert max(copies.values()) <= 2
        assert sum(n - 1 for n in copies.values()) <= 4
    finally:
        await receiver.stop()


async def test_an_endpoint_whose_breaker_opens_gets_back_what_the_child_still_held(
    client: httpx.AsyncClient, with_pool: PoolFactory
) -> None:
    receiver = await Receiver.start(lambda _p, _n: Reply(500, delay_s=0.05))
    try:
        dispatcher, _ = with_pool(1, idle_poll_s=60.0)
        r = await client.post(
            "/v1/endpoints",
            json={
                "url": receiver.url(),
                "event_types": ["PLAYER_OPTED_IN"],
                "max_in_flight": 4,
                "breaker": {"consecutive_failures": 2},
            },
        )
        assert r.status_code == 201, r.text
        endpoint_id = r.json()["id"]
        for n in range(48):
            await publish(client, n)
        await dispatcher.start()
        await until(lambda: len(receiver.requests) >= 4, within_s=20, what="the first sends")

        async def opened() -> bool:
            got = (await client.get(f"/v1/endpoints/{endpoint_id}")).json()
            return bool(got["breaker"]["state"] == "open")

        for _ in range(100):
            if await opened():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert await opened()
        # 16 were held for it in the child; those not yet sent came back unsent.
        assert len(receiver.requests) < 16
        rows = await deliveries(client)
        assert sum(row["attempts"] for row in rows) == len(receiver.requests)
    finally:
        await receiver.stop()
