"""Receivers that misbehave lose no delivery and get no more attempts than the schedule allows.

The engine runs in this process on a manual clock (``run_until_idle`` delivers what is due,
``clock.advance`` moves time), against receivers on 127.0.0.1 that fail at random, hang past
the endpoint's timeout, answer 429 with ``Retry-After``, answer 410, trickle their body at
1 KiB/s, or hang up mid-request. For each it is proved that every delivery ends
``succeeded`` or ``dead`` with the attempts its endpoint's schedule allows, spaced as the
schedule says, each attempt arriving exactly once under the event's own id; that an ordered
endpoint gets each key in publish order; that ``Retry-After`` holds the next attempt back
at least that long; and that 410 disables the endpoint and stops everything sent to it.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from croupier.bootstrap import Container
from croupier.dispatch.sender import ERRORS
from croupier.domain.clock import ManualClock
from croupier.domain.envelope import parse_iso
from tests.chaos.conftest import (
    ReceiverFactory,
    Target,
    assert_arrivals_match,
    assert_order_kept,
    assert_schedule_kept,
    create_endpoint,
    deliveries,
    details,
    open_deliveries,
    opted_in,
    publish,
    publish_keyed,
)
from tests.chaos.receivers import Answer, Flaky, Gone, Hang, HangUp, RateLimited, Trickle


async def drive(
    api: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    *,
    step_s: int = 5,
    within_s: int = 1200,
) -> None:
    """Deliver what is due and move the clock ``step_s`` on, again and again, until nothing
    is left to do; fail once ``within_s`` seconds of the clock have gone by.

    The clock costs nothing to move, so the budget is generous: an endpoint's circuit
    breaker may hold its deliveries back for a cooldown after a run of failures.
    """
    for _ in range(within_s // step_s):
        if await container.dispatcher.run_until_idle() == 0 and await open_deliveries(api) == 0:
            return
        clock.advance(step_s)
    raise AssertionError(f"deliveries still open after {within_s} s of the clock")


async def test_flaky_receivers_lose_nothing_and_an_ordered_one_keeps_each_key_in_order(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    schedule = [0, 5, 10, 20]
    ordered = Target(
        await create_endpoint(
            client,
            (receiver := await receivers(Flaky(seed=11))).url(),
            retry_schedule=schedule,
            ordered=True,
        ),
        receiver,
    )
    unordered = Target(
        await create_endpoint(
            client, (receiver := await receivers(Flaky(seed=12))).url(), retry_schedule=schedule
        ),
        receiver,
    )
    published = await publish_keyed(client, "flaky", 24, keys=4)

    await drive(client, container, clock)

    found = await details(client)
    assert len(found) == 2 * len(published)
    assert_schedule_kept(found, [ordered, unordered])
    assert assert_arrivals_match(found, [ordered, unordered]) == 0
    assert_order_kept(ordered.receiver, published)
    # The randomness did happen, about as often as it was asked to.
    arrivals = len(ordered.receiver.arrivals) + len(unordered.receiver.arrivals)
    failures = sum(1 for d in found for a in d["attempt_log"] if a["status_code"] == 500)
    assert 0.3 <= failures / arrivals <= 0.7, (failures, arrivals)


@pytest.mark.slow
async def test_a_receiver_that_hangs_past_the_timeout_is_cut_off_and_retried_until_dead(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    timeout_ms = 300
    hanging = Target(
        await create_endpoint(
            client,
            (receiver := await receivers(Hang())).url(),
            retry_schedule=[0, 5, 5],
            timeout_ms=timeout_ms,
        ),
        receiver,
    )
    healthy = Target(
        await create_endpoint(
            client, (receiver := await receivers(Answer())).url(), retry_schedule=[0, 5, 5]
        ),
        receiver,
    )
    for n in range(6):
        await publish(client, f"hang-{n}", opted_in(n))

    await drive(client, container, clock)

    found = await details(client)
    assert_schedule_kept(found, [hanging, healthy])
    assert assert_arrivals_match(found, [hanging, healthy]) == 0
    for d in found:
        if d["endpoint_id"] == healthy.id:
            assert (d["status"], d["attempts"]) == ("succeeded", 1)
            continue
        assert d["status"] == "dead"
        for attempt in d["attempt_log"]:
            assert attempt["error"].startswith(ERRORS["timeout"]), attempt["error"]
            # Cut off at the timeout: not before it, and nowhere near the minute it hangs.
            assert timeout_ms * 0.9 <= attempt["duration_ms"] <= timeout_ms + 2000, attempt


async def test_429_with_retry_after_holds_the_next_attempt_back_at_least_that_long(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    retry_after_s = 40
    # Refused twice then accepted, and refused for good: the hint is longer than any delay
    # of the schedule, so it alone decides when each retry comes.
    relenting = Target(
        await create_endpoint(
            client,
            (receiver := await receivers(RateLimited(retry_after_s, refusals=2))).url(),
            retry_schedule=[0, 5, 5, 5],
        ),
        receiver,
    )
    refusing = Target(
        await create_endpoint(
            client,
            (receiver := await receivers(RateLimited(retry_after_s))).url(),
            retry_schedule=[0, 5, 5],
        ),
        receiver,
    )
    for n in range(4):
        await publish(client, f"busy-{n}", opted_in(n))

    await container.dispatcher.run_until_idle()
    first = await details(client)
    assert len(first) == 8
    for d in first:
        [attempt] = d["attempt_log"]
        assert attempt["status_code"] == 429
        held_back_ms = parse_iso(d["next_attempt_at"]) - parse_iso(attempt["started_at"])
        assert held_back_ms >= retry_after_s * 1000, (d["id"], held_back_ms)
    # Past the schedule's 5 s, short of the receiver's 40: nothing may go out yet.
    clock.advance(retry_after_s - 1)
    await container.dispatcher.run_until_idle()
    assert len(relenting.receiver.arrivals) + len(refusing.receiver.arrivals) == 8
    clock.advance(1)

    await drive(client, container, clock)

    found = await details(client)
    assert_schedule_kept(found, [relenting, refusing])
    assert assert_arrivals_match(found, [relenting, refusing]) == 0
    for d in found:
        starts = [parse_iso(a["started_at"]) for a in d["attempt_log"]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert all(gap >= retry_after_s * 1000 for gap in gaps), (d["id"], gaps)
        if d["endpoint_id"] == relenting.id:
            assert (d["status"], d["attempts"]) == ("succeeded", 3)
        else:
            assert (d["status"], d["attempts"]) == ("dead", 3)


async def test_410_disables_the_endpoint_and_nothing_more_is_sent_to_it_until_it_is_enabled(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    gone = Target(
        await create_endpoint(
            client, (receiver := await receivers(Gone())).url(), retry_schedule=[0, 5, 5]
        ),
        receiver,
    )
    healthy = Target(
        await create_endpoint(
            client, (receiver := await receivers(Answer())).url(), retry_schedule=[0, 5, 5]
        ),
        receiver,
    )
    for n in range(5):
        await publish(client, f"gone-{n}", opted_in(n))
    await container.dispatcher.run_until_idle()

    endpoint = (await client.get(f"/v1/endpoints/{gone.id}")).json()
    assert endpoint["disabled"] is True
    assert endpoint["disabled_reason"] and "410" in endpoint["disabled_reason"]
    sent = len(gone.receiver.arrivals)
    # One batch was on the wire when the first 410 came back; nothing after it.
    assert 1 <= sent <= 5
    for n in range(5, 8):
        await publish(client, f"gone-{n}", opted_in(n))
    for _ in range(4):
        clock.advance(5)
        await container.dispatcher.run_until_idle()
    assert len(gone.receiver.arrivals) == sent, "a disabled endpoint was sent to"
    assert len(healthy.receiver.ids()) == 8

    # Not lost either: its deliveries wait, and go out once the endpoint is enabled again.
    waiting = await deliveries(client, endpoint_id=gone.id)
    assert len(waiting) == 5
    assert {d["status"] for d in waiting} == {"failed"}
    gone.receiver.behaviour = Answer()
    enabled = await client.patch(f"/v1/endpoints/{gone.id}", json={"disabled": False})
    assert enabled.status_code == 200, enabled.text
    await container.dispatcher.run_until_idle()
    found = await details(client)
    assert_schedule_kept(found, [gone, healthy])
    assert assert_arrivals_match(found, [gone, healthy]) == 0
    assert {(d["status"], d["attempts"]) for d in found if d["endpoint_id"] == gone.id} == {
        ("succeeded", 2)
    }


async def test_a_body_trickled_at_1_kib_per_second_times_out_and_is_retried_until_dead(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    timeout_ms = 500
    # 8 KiB at 1 KiB/s: the body would take 8 s, sixteen times the timeout.
    trickling = Target(
        await create_endpoint(
            client,
            (receiver := await receivers(Trickle(size=8192, bytes_per_s=1024))).url(),
            retry_schedule=[0, 5],
            timeout_ms=timeout_ms,
        ),
        receiver,
    )
    for n in range(4):
        await publish(client, f"trickle-{n}", opted_in(n))

    await drive(client, container, clock)

    found = await details(client)
    assert_schedule_kept(found, [trickling])
    assert assert_arrivals_match(found, [trickling]) == 0
    for d in found:
        assert (d["status"], d["attempts"]) == ("dead", 2)
        for attempt in d["attempt_log"]:
            assert attempt["error"].startswith(ERRORS["timeout"]), attempt["error"]
            assert timeout_ms * 0.9 <= attempt["duration_ms"] <= timeout_ms + 2000, attempt


async def test_a_receiver_that_hangs_up_mid_request_gets_every_attempt_the_schedule_allows(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    receivers: ReceiverFactory,
) -> None:
    hanging_up = Target(
        await create_endpoint(
            client, (receiver := await receivers(HangUp())).url(), retry_schedule=[0, 5, 5]
        ),
        receiver,
    )
    healthy = Target(
        await create_endpoint(
            client, (receiver := await receivers(Answer())).url(), retry_schedule=[0, 5, 5]
        ),
        receiver,
    )
    for n in range(4):
        await publish(client, f"hangup-{n}", opted_in(n))

    await drive(client, container, clock)

    found = await details(client)
    assert_schedule_kept(found, [hanging_up, healthy])
    assert assert_arrivals_match(found, [hanging_up, healthy]) == 0
    for d in found:
        if d["endpoint_id"] == healthy.id:
            assert (d["status"], d["attempts"]) == ("succeeded", 1)
            continue
        assert (d["status"], d["attempts"]) == ("dead", 3)
        for attempt in d["attempt_log"]:
            assert attempt["status_code"] is None
            assert attempt["error"].startswith(ERRORS["closed"]), attempt["error"]
