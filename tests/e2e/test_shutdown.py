"""Shutdown: SIGTERM drains what is in flight, records it, and hands the rest to the next start.

Also: one process owns an SQLite file, and a second ``serve`` on it is refused plainly.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.e2e.conftest import ReceiverFactory
from tests.e2e.harness import (
    Launcher,
    create_endpoint,
    deliveries,
    eventually,
    free_port,
    publish,
    wait_statuses,
)

#: Long enough that a restart which had to wait for the leases would miss every deadline here:
#: what a stopping process did not send must be released, not left to expire.
LEASE_SECONDS = 120


async def test_sigterm_lets_in_flight_deliveries_finish_and_a_restart_sends_the_rest(
    launcher: Launcher, receivers: ReceiverFactory
) -> None:
    receiver = await receivers(delay_s=1.0)
    drain_s = 10
    serve = await launcher.serve(
        endpoint_max_in_flight=4, drain_seconds=drain_s, lease_seconds=LEASE_SECONDS
    )
    event_ids = [f"evt_drain_{n:02d}" for n in range(20)]
    async with serve.api() as api:
        await create_endpoint(api, receiver.url(), retry_schedule=[0, 1, 1])
        for event_id in event_ids:
            await publish(api, event_id)
    await eventually(lambda: receiver.in_flight >= 4, within_s=10, what="4 requests in flight")

    sent_at = time.monotonic()
    serve.terminate()
    await serve.wait_exit(within_s=drain_s + 10)
    took = time.monotonic() - sent_at
    assert took < drain_s, f"took {took:.1f} s: the drain should end when the sends do"
    assert "Application shutdown complete" in serve.output(), serve.output()
    arrived = [a.webhook_id for a in receiver.arrivals]
    assert sorted(receiver.answered) == sorted(arrived), "every started request was finished"
    # Only what was being sent at the signal (4), or a second round had the signal taken a
    # second to land; what was claimed and queued was handed back, not sent.
    assert 4 <= len(arrived) <= 8, arrived
    assert len(set(arrived)) == len(arrived)

    inspector = await launcher.serve(dispatcher_enabled=False)
    async with inspector.api() as api:
        recorded = {d["event_id"]: d for d in await deliveries(api)}
    await inspector.stop()
    for event_id in event_ids:
        delivery = recorded[event_id]
        if event_id in arrived:
            assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1), delivery
        else:
            assert (delivery["status"], delivery["attempts"]) == ("pending", 0), delivery

    receiver.delay_s = 0.0
    restarted = await launcher.serve(lease_seconds=LEASE_SECONDS)
    await eventually(
        lambda: receiver.ids() == set(event_ids), within_s=20, what="the rest of the events"
    )
    async with restarted.api() as api:
        await wait_statuses(api, {"succeeded": len(event_ids)}, within_s=10)
    copies = Counter(a.webhook_id for a in receiver.arrivals)
    assert set(copies.values()) == {1}, "a clean stop sends nothing twice"


async def test_sigterm_cuts_off_sends_that_outlast_the_drain_window_and_a_restart_resends_them(
    launcher: Launcher, receivers: ReceiverFactory
) -> None:
    receiver = await receivers(delay_s=60.0)
    drain_s = 1
    serve = await launcher.serve(drain_seconds=drain_s, lease_seconds=LEASE_SECONDS)
    event_ids = {f"evt_cut_{n}" for n in range(3)}
    async with serve.api() as api:
        await create_endpoint(api, receiver.url(), retry_schedule=[0, 1, 1])
        for event_id in sorted(event_ids):
            await publish(api, event_id)
    await eventually(lambda: receiver.in_flight == 3, within_s=10, what="3 requests in flight")

    sent_at = time.monotonic()
    serve.terminate()
    await serve.wait_exit(within_s=drain_s + 15)
    took = time.monotonic() - sent_at
    assert took < drain_s + 5, f"took {took:.1f} s for a {drain_s} s drain window"
    assert "Application shutdown complete" in serve.output(), serve.output()
    assert receiver.answered == []

    receiver.delay_s = 0.0
    restarted = await launcher.serve(lease_seconds=LEASE_SECONDS)
    await eventually(
        lambda: len(receiver.answered) == 3, within_s=20, what="the cut-off events, again"
    )
    async with restarted.api() as api:
        await wait_statuses(api, {"succeeded": 3}, within_s=10)
    assert sorted(receiver.answered) == sorted(event_ids)
    copies = Counter(a.webhook_id for a in receiver.arrivals)
    assert copies == dict.fromkeys(event_ids, 2), "cut off once, then sent once more"


async def test_sigterm_with_deliveries_in_flight_exits_with_status_0(
    launcher: Launcher, receivers: ReceiverFactory
) -> None:
    receiver = await receivers(delay_s=0.5)
    serve = await launcher.serve(drain_seconds=10)
    async with serve.api() as api:
        await create_endpoint(api, receiver.url(), retry_schedule=[0])
        await publish(api, "evt_exit_code")
    await eventually(lambda: receiver.in_flight == 1, within_s=10, what="a request in flight")
    serve.terminate()
    code = await serve.wait_exit(within_s=20)
    assert receiver.answered == ["evt_exit_code"]
    assert code == 0, (
        f"croupier serve ended with {code}"
        + (f" (killed by {signal.Signals(-code).name})" if code < 0 else "")
        + f" after a clean shutdown:\n{serve.output()}"
    )


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_second_serve_on_the_same_sqlite_file_is_refused_with_a_clear_message(
    launcher: Launcher, database_url: str
) -> None:
    first = await launcher.serve()
    second = launcher.start(port=free_port())
    code = await second.wait_exit(within_s=30)
    assert code != 0
    said = " ".join(second.output().split())
    assert "another croupier process is using" in said, said
    assert "croupier.db" in said
    assert "Traceback" not in said
    async with first.api() as api:
        assert (await api.get("/v1/endpoints")).status_code == 200, "the first one still serves"
