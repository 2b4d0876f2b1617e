"""``kill -9`` of a real ``croupier serve`` in the middle of a batch, then a restart, loses nothing.

The batch goes to three receivers at once: a healthy one, one that fails half the time at
random behind an ordered endpoint, and one that hangs up on every request. The serving
process is killed from inside a request handler, so requests are on the wire when it dies.
After a restart every delivery ends ``succeeded`` or ``dead`` with the attempts its schedule
allows; the only requests that arrive once more than recorded are those the killed process
had in flight, repeated by its successor under the same event id and attempt number; and
each key of the ordered endpoint still arrives in publish order.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from croupier.dispatch.dispatcher import HELD_PER_SLOT
from tests.chaos.conftest import (
    NO_BREAKER,
    TIME_SCALE,
    ReceiverFactory,
    Target,
    assert_arrivals_match,
    assert_order_kept,
    assert_schedule_kept,
    create_endpoint,
    details,
    publish_keyed,
    settled,
    telling,
    wait_final,
)
from tests.chaos.receivers import Answer, Arrival, Flaky, HangUp
from tests.e2e.harness import Launcher, eventually, running, sender_children

EVENTS = 96
KEYS = 12
KILL_AFTER = 36
ENDPOINT_MAX_IN_FLIGHT = 16


@pytest.mark.slow
async def test_kill_9_mid_batch_then_a_restart_loses_nothing_and_repeats_only_what_was_in_flight(
    launcher: Launcher, receivers: ReceiverFactory, backend: str
) -> None:
    started = time.monotonic()
    settings: dict[str, Any] = {
        "time_scale": TIME_SCALE,
        "idle_poll_seconds": 0.05,
        # In the engine's clock: a second of real time. On PostgreSQL the killed process's
        # leases must run out before its deliveries are claimed again; on SQLite a starting
        # process clears them, as it owns the file.
        "lease_seconds": 20,
        "endpoint_max_in_flight": ENDPOINT_MAX_IN_FLIGHT,
        # One sender child: its fate after the kill is checked too.
        "senders": 1,
        "grpc_enabled": False,
    }
    doomed = await launcher.serve(**settings)
    [sender] = sender_children(doomed.proc.pid)
    async with doomed.api() as api:
        steady = Target(
            await create_endpoint(
                api,
                (receiver := await receivers(Answer(delay_s=0.002))).url(),
                retry_schedule=[0, 1, 1, 1, 1],
            ),
            receiver,
        )
        flaky = Target(
            await create_endpoint(
                api,
                (receiver := await receivers(Flaky(seed=21))).url(),
                retry_schedule=[0, 1, 1, 1, 1],
                ordered=True,
                breaker=NO_BREAKER,
            ),
            receiver,
        )
        hanging_up = Target(
            await create_endpoint(
                api,
                (receiver := await receivers(HangUp())).url(),
                retry_schedule=[0, 1, 1],
                breaker=NO_BREAKER,
            ),
            receiver,
        )
        targets = [steady, flaky, hanging_up]
        # The first requests wait at the receivers until the whole batch is published: the
        # kill must find the batch in the store, not in the publisher's hands.
        for target in targets:
            target.receiver.generation = 1
            target.receiver.hold()
        published = await publish_keyed(api, "crash", EVENTS, KEYS)
    killed_during: list[Arrival] = []

    def kill_mid_request(arrival: Arrival) -> None:
        # Before this handler answers: this request, and whatever else is on the wire, is
        # in flight when the process dies.
        if not killed_during and len(steady.receiver.ids()) >= KILL_AFTER:
            doomed.kill()
            killed_during.append(arrival)

    steady.receiver.on_arrival = kill_mid_request
    for target in targets:
        target.receiver.release()
    await eventually(lambda: bool(killed_during), within_s=30, what=f"{KILL_AFTER} arrivals")
    assert await doomed.wait_exit(within_s=10) == -signal.SIGKILL
    await eventually(lambda: not running(sender), within_s=5, what="the orphaned sender to exit")
    steady.receiver.on_arrival = None
    # Requests the dead processes wrote may still be read after the kill: they belong to
    # generation 1, so the successor's are labelled only once all is quiet.
    watched = [t.receiver for t in targets]
    await settled(watched)
    at_kill = len(steady.receiver.ids())
    assert at_kill < EVENTS, "the kill landed after the batch; it proves nothing"

    for target in targets:
        target.receiver.generation = 2
    survivor = await launcher.serve(**settings)
    async with survivor.api() as api:
        await wait_final(api, len(targets) * EVENTS, within_s=60)
        found = await details(api, only=telling(targets))
    await survivor.stop()

    # Each process's clock starts from the wall clock and runs faster: the successor's is
    # behind the killed one's, so retries cannot be timed across the kill; their count can.
    # (Nor within one process: its sender child stamps attempts on the wall clock, see
    # test_scaled_time.py.)
    assert_schedule_kept(found, targets, spacing=False)
    repeated = assert_arrivals_match(found, targets, crashed_generation=1)
    assert repeated <= len(targets) * HELD_PER_SLOT * ENDPOINT_MAX_IN_FLIGHT, repeated
    assert steady.receiver.ids() == set(published)
    assert steady.receiver.count(killed_during[0].webhook_id) == 2, "cut off, so sent again"
    assert_order_kept(flaky.receiver, published)
    statuses = {t.id: {d["status"] for d in found if d["endpoint_id"] == t.id} for t in targets}
    assert statuses[steady.id] == {"succeeded"}
    assert statuses[hanging_up.id] == {"dead"}
    print(
        f"\n[{backend}] killed at {at_kill}/{EVENTS} events on the healthy endpoint; "
        f"{repeated} deliveries repeated; {time.monotonic() - started:.1f} s in all"
    )
