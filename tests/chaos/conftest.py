"""Fixtures and checks shared by the chaos suite.

Every test here runs on each backend the ``backend`` fixture of ``tests/conftest.py``
gives, but for those about PostgreSQL itself, which are collected for it alone. Receivers
are :class:`~tests.chaos.receivers.ChaosReceiver` servers; the engine runs either in the
test's process (the ``container`` fixture on a manual clock, or :func:`live` on a scaled
clock with its background loops) or as a real ``croupier serve`` (``launcher``).

The checks read what the engine recorded through the REST API and hold it against what the
receivers saw: every delivery ends ``succeeded`` or ``dead`` as its endpoint's schedule says,
each attempt arrived once (more only where a crash cut a request off), and each key of an
ordered endpoint arrived in publish order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build
from croupier.config import Settings
from croupier.domain.clock import ScaledClock
from croupier.domain.envelope import parse_iso
from tests.chaos.receivers import Arrival, Behaviour, ChaosReceiver
from tests.conftest import ADMIN_KEY
from tests.e2e.harness import Launcher

EVENT_TYPE = "PLAYER_OPTED_IN"
#: How much faster than the wall clock the engine's clock runs where a test needs its real
#: background loops: a retry due in 1 s comes 50 ms later.
TIME_SCALE = 20.0

#: Circuit breakers that never open, for endpoints that fail on every request in a test run
#: on a real clock: an open breaker lets one probe through per cooldown, and the run would
#: outlast its time bound before the schedule is spent, which is what the test is about.
NO_BREAKER = {"consecutive_failures": 10_000, "min_requests": 1_000_000}

ReceiverFactory = Callable[[Behaviour], Awaitable[ChaosReceiver]]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def receivers() -> AsyncIterator[ReceiverFactory]:
    """``await receivers(behaviour)`` starts one more receiver; all stop at teardown."""
    started: list[ChaosReceiver] = []

    async def start(behaviour: Behaviour) -> ChaosReceiver:
        receiver = await ChaosReceiver.start(behaviour)
        started.append(receiver)
        return receiver

    yield start
    await asyncio.gather(*(receiver.stop() for receiver in started))


@pytest.fixture
def launcher(database_url: str, tmp_path: Path) -> Iterator[Launcher]:
    """Starts ``croupier serve`` processes on the test's database; kills what is left."""
    launcher = Launcher(database_url, tmp_path)
    try:
        yield launcher
    finally:
        launcher.kill_all()


@dataclass(frozen=True)
class Live:
    """croupier in this process with its dispatcher running in the background."""

    container: Container
    api: httpx.AsyncClient
    clock: ScaledClock


LiveFactory = Callable[..., Awaitable[Live]]


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveFactory]:
    """``await live(**settings)`` starts the engine on a clock ``TIME_SCALE`` times faster
    than the wall clock, its claim, record and heartbeat loops running, sending from this
    event loop unless the settings give it sender processes. It is closed at teardown."""
    started: list[tuple[Container, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Live:
        clock = ScaledClock(TIME_SCALE)
        tuned = settings.model_copy(
            update={
                "dispatcher_enabled": True,
                "time_scale": TIME_SCALE,
                # Retries come due every few tens of milliseconds: a poll a second apart
                # would be what paces them.
                "idle_poll_seconds": 0.05,
                # Requests that hang are cut off at teardown rather than waited for.
                "drain_seconds": 0.5,
                # Leases that outlive any test, so that no heartbeat is renewing them when
                # the dispatcher stops: a renewal cut off mid-transaction on PostgreSQL
                # was once seen to leave its connection open and the shutdown hanging.
                "lease_seconds": 600 * TIME_SCALE,
                **overrides,
            }
        )
        container = await build(tuned, clock=clock, rng=random.Random(7), auto_migrate=True)
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container)),
            base_url="http://croupier.test",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30.0,
        )
        started.append((container, api))
        await container.start()
        return Live(container, api, clock)

    yield start
    for container, api in started:
        await api.aclose()
        await container.close()


# -- the REST API ----------------------------------------------------------------------------


def opted_in(n: int, key: str | None = None) -> dict[str, Any]:
    """``data`` for ``PLAYER_OPTED_IN``; its schema allows the extra ``n`` and ``key``."""
    return {"player_id": f"p{n}", "campaign_id": "c1", "event_type": EVENT_TYPE, "n": n, "key": key}


async def create_endpoint(
    api: httpx.AsyncClient, url: str, *, event_types: Iterable[str] = (EVENT_TYPE,), **fields: Any
) -> dict[str, Any]:
    created = await api.post(
        "/v1/endpoints", json={"url": url, "event_types": list(event_types), **fields}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def publish(
    api: httpx.AsyncClient,
    event_id: str,
    data: Mapping[str, Any],
    *,
    event_type: str = EVENT_TYPE,
    ordering_key: str | None = None,
    tries: int = 1,
) -> None:
    """Publish one event; with ``tries`` > 1 a 5xx or a broken connection is tried again
    under the same id, which the API answers idempotently."""
    body: dict[str, Any] = {"id": event_id, "type": event_type, "data": dict(data)}
    if ordering_key is not None:
        body["ordering_key"] = ordering_key
    for attempt in range(1, tries + 1):
        try:
            published = await api.post("/v1/events", json=body)
        except httpx.TransportError:
            if attempt == tries:
                raise
        else:
            if published.status_code < 500 or attempt == tries:
                assert published.status_code == 202, published.text
                return
        await asyncio.sleep(0.2)


async def publish_keyed(
    api: httpx.AsyncClient, prefix: str, count: int, keys: int, *, concurrency: int = 8
) -> dict[str, tuple[str, int]]:
    """Publish ``count`` events, ``concurrency`` at a time, spread round-robin over
    ``keys`` ordering keys; their ids, each with its key and number.

    Publishes of one key are made one after the other, so each key's publish order is
    its numbers' order.
    """
    published: dict[str, tuple[str, int]] = {}
    by_key: dict[str, list[int]] = defaultdict(list)
    for n in range(count):
        by_key[f"k{n % keys}"].append(n)
    gate = asyncio.Semaphore(concurrency)

    async def one_key(key: str, numbers: list[int]) -> None:
        for n in numbers:
            event_id = f"{prefix}-{n:05d}"
            async with gate:
                await publish(api, event_id, opted_in(n, key), ordering_key=key)
            published[event_id] = (key, n)

    await asyncio.gather(*(one_key(key, numbers) for key, numbers in by_key.items()))
    return published


async def deliveries(api: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    """Every delivery matching ``filters``, following the cursor to the end."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        params = {**filters, "limit": "500"}
        if cursor is not None:
            params["cursor"] = cursor
        page = await api.get("/v1/deliveries", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        out.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("more than 1000 pages of deliveries")


async def details(
    api: httpx.AsyncClient,
    *,
    only: Callable[[dict[str, Any]], bool] = lambda _delivery: True,
    concurrency: int = 16,
    **filters: str,
) -> list[dict[str, Any]]:
    """Every delivery matching ``filters``; those that ``only`` picks (all by default) with
    their ``attempt_log``, from ``GET /v1/deliveries/{id}``, the others as listed."""
    gate = asyncio.Semaphore(concurrency)

    async def one(delivery_id: str) -> dict[str, Any]:
        async with gate:
            got = await api.get(f"/v1/deliveries/{delivery_id}")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def maybe(delivery: dict[str, Any]) -> dict[str, Any]:
        return await one(delivery["id"]) if only(delivery) else delivery

    return list(await asyncio.gather(*(maybe(d) for d in await deliveries(api, **filters))))


async def open_deliveries(api: httpx.AsyncClient) -> int:
    """How many deliveries still have work ahead (pending or failed)."""
    rows = await deliveries(api)
    return sum(1 for d in rows if d["status"] in ("pending", "failed"))


async def wait_final(
    api: httpx.AsyncClient, expected: int, *, within_s: float, every_s: float = 0.25
) -> None:
    """Until all ``expected`` deliveries exist and each is ``succeeded`` or ``dead``. A
    failing read (the store restarting under the server) counts as not yet."""
    deadline = time.monotonic() + within_s
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            rows = await deliveries(api)
        except (AssertionError, httpx.TransportError):
            rows = []
        seen = {}
        for row in rows:
            seen[row["status"]] = seen.get(row["status"], 0) + 1
        if len(rows) == expected and set(seen) <= {"succeeded", "dead"}:
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"wanted {expected} deliveries all final within {within_s} s: {seen}")


# -- the checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An endpoint under test and the receiver behind it."""

    endpoint: dict[str, Any]
    receiver: ChaosReceiver

    @property
    def id(self) -> str:
        endpoint_id: str = self.endpoint["id"]
        return endpoint_id

    @property
    def schedule(self) -> list[int]:
        schedule: list[int] = self.endpoint["retry_schedule"]
        return schedule


def telling(targets: Iterable[Target]) -> Callable[[dict[str, Any]], bool]:
    """Picks the deliveries whose attempt logs are worth a request each: dead, retried, or
    not seen exactly once by their receiver. A lone success says all it has to in the list.
    """
    receivers = {t.id: t.receiver for t in targets}

    def pick(delivery: dict[str, Any]) -> bool:
        seen = receivers[delivery["endpoint_id"]].count(delivery["event_id"])
        return delivery["status"] != "succeeded" or delivery["attempts"] != 1 or seen != 1

    return pick


def attempts_of(delivery: Mapping[str, Any]) -> int:
    """How many attempts the engine recorded: its attempt log where it was read."""
    log = delivery.get("attempt_log")
    count: int = len(log) if log is not None else delivery["attempts"]
    return count


def assert_schedule_kept(
    found: Iterable[dict[str, Any]], targets: Iterable[Target], *, spacing: bool = True
) -> None:
    """Every delivery ended ``succeeded`` or ``dead``, with as many attempts as its
    endpoint's schedule allows: a dead one used them all, a succeeded one succeeded at its
    last and failed every one before. With ``spacing``, each retry started no earlier than
    the schedule's delay after the attempt before it (in the engine's clock; jitter is off).

    Deliveries read from the list rather than one by one have no attempt log: only their
    status and count are checked.
    """
    schedules = {t.id: t.schedule for t in targets}
    for d in found:
        schedule = schedules[d["endpoint_id"]]
        where = f"delivery {d['id']} of {d['event_id']} to {d['endpoint_id']}"
        assert d["status"] in ("succeeded", "dead"), (where, d["status"])
        count = attempts_of(d)
        if d["status"] == "dead":
            assert count == len(schedule), (where, count, schedule)
        else:
            assert 1 <= count <= len(schedule), (where, count, schedule)
        log = d.get("attempt_log")
        if log is None:
            continue
        assert [a["number"] for a in log] == list(range(1, len(log) + 1)), where
        assert d["attempts"] == len(log), (where, d["attempts"], len(log))
        assert [a["succeeded"] for a in log[:-1]] == [False] * (len(log) - 1), where
        assert log[-1]["succeeded"] == (d["status"] == "succeeded"), where
        if spacing:
            starts = [parse_iso(a["started_at"]) for a in log]
            for k in range(1, len(starts)):
                gap_ms = starts[k] - starts[k - 1]
                assert gap_ms >= schedule[k] * 1000, (where, k + 1, gap_ms, schedule)


def assert_arrivals_match(
    found: Iterable[dict[str, Any]],
    targets: Iterable[Target],
    *,
    crashed_generation: int | None = None,
) -> int:
    """Each receiver saw each event exactly as many times as the engine recorded attempts,
    ``meta.attempt`` numbered 1, 2, ... in arrival order, always under the event's own id;
    return how many deliveries arrived once more than that.

    With no crash that number must be 0. With ``crashed_generation``, the process of that
    generation was killed: a request it had on the wire was never recorded and is sent again
    by its successor, under the same id and attempt number. So a delivery may have one
    unrecorded copy, and only one sent by the killed process and repeated by another.
    """
    arrivals: dict[tuple[str, str], list[Arrival]] = defaultdict(list)
    for target in targets:
        for arrival in target.receiver.arrivals:
            arrivals[(target.id, arrival.webhook_id)].append(arrival)
    repeated = 0
    for d in found:
        copies = arrivals[(d["endpoint_id"], d["event_id"])]
        recorded = attempts_of(d)
        where = f"{d['event_id']} to {d['endpoint_id']}"
        extra = len(copies) - recorded
        assert extra in ((0, 1) if crashed_generation is not None else (0,)), (
            where,
            len(copies),
            recorded,
            [a.generation for a in copies],
        )
        with_body = [a.envelope() for a in copies if a.body]
        assert all(e["id"] == d["event_id"] for e in with_body), where
        numbers = [e["meta"]["attempt"] for e in with_body]
        if len(with_body) == len(copies):
            # A repeat carries the number of the attempt it repeats.
            assert sorted(set(numbers)) == list(range(1, recorded + 1)), (where, numbers)
            assert numbers == sorted(numbers), (where, numbers)
        if extra:
            repeated += 1
            generations = [a.generation for a in copies]
            assert crashed_generation in generations, (where, generations)
            assert max(generations) > crashed_generation, (where, generations)
    for target in targets:
        published = {d["event_id"] for d in found if d["endpoint_id"] == target.id}
        assert target.receiver.ids() <= published, f"unknown webhook ids at {target.id}"
    return repeated


def assert_order_kept(receiver: ChaosReceiver, published: Mapping[str, tuple[str, int]]) -> None:
    """Per ordering key, the events arrived in publish order: a later event never before
    an earlier one has been given up on, retries of one event back to back."""
    per_key: dict[str, list[int]] = defaultdict(list)
    for arrival in receiver.arrivals:
        key, n = published[arrival.webhook_id]
        per_key[key].append(n)
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), f"key {key} arrived out of order: {numbers}"


def p99(samples: Iterable[float]) -> float:
    """The 99th percentile of ``samples``."""
    ordered = sorted(samples)
    assert ordered, "no samples"
    # The nearest-rank percentile: the smallest sample at or above 99% of them.
    rank = max(1, -(-99 * len(ordered) // 100))
    return ordered[rank - 1]


async def settled(
    receivers: Iterable[ChaosReceiver], *, quiet_s: float = 0.3, within_s: float = 10.0
) -> None:
    """Until the receivers have had no new request, and hold none, for ``quiet_s``."""
    watched = list(receivers)

    def state() -> tuple[int, int]:
        return sum(len(r.arrivals) for r in watched), sum(r.in_flight for r in watched)

    deadline = time.monotonic() + within_s
    seen, since = state(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"the receivers were still busy after {within_s:.0f} s")
        await asyncio.sleep(0.02)
        now = state()
        if now != seen or now[1]:
            seen, since = now, time.monotonic()
