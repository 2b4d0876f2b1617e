"""Crash safety: ``kill -9`` in the middle of 10,000 deliveries loses none of them.

The spec's promise, proved on each backend with a real ``croupier serve`` and a real
receiver: after the kill, a restart delivers every event; only deliveries that were in
flight at the kill arrive twice, and a repeat carries the same ``webhook-id`` as the first.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from croupier.dispatch.dispatcher import HELD_PER_SLOT
from tests.e2e.conftest import ReceiverFactory
from tests.e2e.harness import (
    Arrival,
    Launcher,
    WebhookReceiver,
    create_endpoint,
    deliveries,
    eventually,
    publish_many,
    running,
    sender_children,
    wait_statuses,
)

EVENTS = 10_000
MAX_IN_FLIGHT = 64
#: The dispatcher holds at most ``HELD_PER_SLOT * max_in_flight`` claimed-but-unrecorded
#: deliveries (``DispatcherConfig.held_limit``): each may have been sent before the kill.
HELD_LIMIT = HELD_PER_SLOT * MAX_IN_FLIGHT
KILL_AFTER = 2_000


@pytest.mark.slow
async def test_a_restart_after_kill_9_delivers_every_event_and_repeats_only_those_in_flight(
    launcher: Launcher, receivers: ReceiverFactory, backend: str
) -> None:
    started = time.monotonic()
    # A millisecond per request keeps the run long enough for the kill to land mid-way.
    receiver = await receivers(delay_s=0.001)
    settings: dict[str, Any] = {
        "max_in_flight": MAX_IN_FLIGHT,
        "endpoint_max_in_flight": MAX_IN_FLIGHT,
        # PostgreSQL: the killed process's leases must run out before its deliveries are
        # claimed again; SQLite: a starting process clears them, as it owns the file.
        "lease_seconds": 3,
        # One sender child, whatever the machine: its fate after the kill is checked too.
        "senders": 1,
    }

    publisher = await launcher.serve(dispatcher_enabled=False)
    async with publisher.api() as api:
        endpoint = await create_endpoint(api, receiver.url(), retry_schedule=[0, 1, 1, 1, 1])
    event_ids = await publish_many(publisher, EVENTS, concurrency=32)
    assert len(set(event_ids)) == EVENTS
    # Its exit code is test_shutdown's business; here it only has to be gone.
    await publisher.stop()
    published_s = time.monotonic() - started
    assert not receiver.arrivals, "nothing may be sent while the dispatcher is off"

    receiver.generation = 1
    doomed = await launcher.serve(**settings)
    senders = sender_children(doomed.proc.pid)
    assert len(senders) == 1, senders
    killed_during: list[Arrival] = []

    def kill_mid_request(arrival: Arrival) -> None:
        # From inside the handler, before it answers: this request, and whatever else is on
        # the wire, is in flight when the process dies.
        if not killed_during and len(receiver.ids()) >= KILL_AFTER:
            doomed.kill()
            killed_during.append(arrival)

    receiver.on_arrival = kill_mid_request
    await eventually(lambda: bool(killed_during), within_s=60, what=f"{KILL_AFTER} arrivals")
    assert await doomed.wait_exit(within_s=10) == -signal.SIGKILL
    # Its parent gone, the sender child sees its socket close and exits: no orphan sends on.
    await eventually(
        lambda: not running(senders[0]), within_s=5, what="the orphaned sender child to exit"
    )
    receiver.on_arrival = None
    # Requests the dead processes wrote before dying may still be read and handled by the
    # receiver after this point; they are generation 1. Label the successor's only once the
    # receiver has been idle for a while, or a late first copy reads as its second send.
    await settled(receiver)
    at_kill = len(receiver.ids())
    assert at_kill < EVENTS, "the kill landed after the last delivery; it proves nothing"

    receiver.generation = 2
    survivor = await launcher.serve(**settings)
    await eventually(
        lambda: len(receiver.ids()) == EVENTS, within_s=120, what=f"all {EVENTS} event ids"
    )
    async with survivor.api() as api:
        await wait_statuses(api, {"succeeded": EVENTS}, within_s=30)
        # A send cut off by the kill left no attempt behind: each delivery records only the
        # one that succeeded.
        assert {d["attempts"] for d in await deliveries(api)} == {1}
    await survivor.stop()

    assert receiver.ids() == set(event_ids)
    for arrival in receiver.arrivals:
        assert arrival.envelope()["id"] == arrival.webhook_id
    copies = Counter(a.webhook_id for a in receiver.arrivals)
    repeated = {webhook_id for webhook_id, n in copies.items() if n > 1}
    assert len(repeated) <= HELD_LIMIT, (
        f"{len(repeated)} events arrived twice; at most {HELD_LIMIT} could be in flight"
    )
    generations: dict[str, list[int]] = defaultdict(list)
    for arrival in receiver.arrivals:
        generations[arrival.webhook_id].append(arrival.generation)
    for webhook_id in repeated:
        # Sent by the killed process, then once more by its successor: never twice by one.
        assert generations[webhook_id] == [1, 2], (webhook_id, generations[webhook_id])
    # Cut off before its answer, it was never recorded: it must have been sent again.
    assert killed_during[0].webhook_id in repeated
    print(
        f"\n[{backend}] endpoint {endpoint['id']}: published {EVENTS} in {published_s:.1f} s; "
        f"killed at {at_kill} distinct arrivals; {len(repeated)} repeated; "
        f"{len(receiver.arrivals)} requests; {time.monotonic() - started:.1f} s in all"
    )


async def settled(
    receiver: WebhookReceiver, *, quiet_s: float = 0.3, within_s: float = 10.0
) -> None:
    """Until the receiver has handled nothing new, and holds nothing, for ``quiet_s``."""
    deadline = time.monotonic() + within_s
    seen, since = len(receiver.arrivals), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"the receiver was still busy after {within_s:.0f} s")
        await asyncio.sleep(0.02)
        if len(receiver.arrivals) != seen or receiver.in_flight:
            seen, since = len(receiver.arrivals), time.monotonic()
