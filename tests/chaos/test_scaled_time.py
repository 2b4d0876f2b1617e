"""On a scaled clock, attempts sent by a sender process are stamped in the scaled clock's time.

``CROUPIER_TIME_SCALE`` makes the store and the dispatcher see time run faster, so that
drills and tests can go through retry schedules in seconds. An attempt's ``started_at`` is
what its retries are spaced from and what the endpoint's health counts by; it must be in
the same time as ``next_attempt_at``, whether the engine sends from its own process or from
sender child processes. Here the engine runs in this process with one sender child, and the
attempts of a receiver that refuses everything must be spaced as the schedule says.
"""

from __future__ import annotations

from tests.chaos.conftest import (
    LiveFactory,
    ReceiverFactory,
    Target,
    assert_schedule_kept,
    create_endpoint,
    details,
    opted_in,
    publish,
    wait_final,
)
from tests.chaos.receivers import Answer


async def test_attempts_sent_by_a_sender_process_are_spaced_as_the_schedule_says(
    live: LiveFactory, receivers: ReceiverFactory
) -> None:
    api = (await live(senders=1)).api
    refusing = Target(
        await create_endpoint(
            api, (receiver := await receivers(Answer(500))).url(), retry_schedule=[0, 2, 2]
        ),
        receiver,
    )
    for n in range(2):
        await publish(api, f"scaled-{n}", opted_in(n))
    await wait_final(api, 2, within_s=20)
    found = await details(api)
    assert {(d["status"], d["attempts"]) for d in found} == {("dead", 3)}
    assert_schedule_kept(found, [refusing])
