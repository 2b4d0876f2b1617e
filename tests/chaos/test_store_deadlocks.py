"""Transactions the engine runs side by side on PostgreSQL never deadlock.

The dispatcher renews its leases (the heartbeat) and records outcomes (the recorder) while
the API publishes events, all at once, in transactions that lock rows of the same tables,
each in its own order. Under load they meet now and then: the chaos runs on PostgreSQL
logged ``deadlock detected`` for a renewal against a record, and for a record (locking its
endpoints' health rows) against a publish (whose new deliveries lock their endpoints as
foreign keys), which then answered 500. The server finds a deadlock only after its
``deadlock_timeout`` (a second), and every claim and record of the dispatcher waits behind
it. Here row locks held by the test line each pair up as that timing does; once the test
lets go, both transactions must finish promptly and without an error.

PostgreSQL only: SQLite has a single writer, so two write transactions never overlap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from croupier.domain.deliveries import Attempt, AttemptResult, Decision, DeliveryStatus
from croupier.domain.ids import new_id
from croupier.services.ports import Claim, Outcome
from tests.chaos.conftest import create_endpoint, opted_in, publish
from tests.conftest import BACKENDS

OWNER = "wrk_chaos"
#: The endpoints a publish reads, in the order it reads them (as ``subscriptions`` does).
_SUBSCRIBED = """
    SELECT id FROM endpoints
    WHERE tenant_id = 'default' AND deleted_at IS NULL AND disabled = false
"""
_WAITING = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
"""


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"])
async def test_renewing_leases_and_recording_outcomes_never_deadlock(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    database_url: str,
    backend: str,
) -> None:
    # Nothing is sent: the test plays the dispatcher against the store itself.
    await create_endpoint(client, "http://127.0.0.1:9/unused", retry_schedule=[0, 1])
    for n in range(3):
        await publish(client, f"held-{n}", opted_in(n))
    queue = container.dispatcher.queue
    claimed = await queue.claim(
        OWNER,
        now_ms=clock.now_ms(),
        limit=10,
        lease_ms=60_000,
        rooms={},
        default_room=10,
    )
    if len(claimed.claims) != 3:
        raise RuntimeError(f"claimed {len(claimed.claims)} deliveries, not 3")
    first, second, third = sorted(claimed.claims, key=lambda c: c.seq)

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    blocker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(
            "SELECT seq FROM deliveries WHERE seq = $1 FOR NO KEY UPDATE", third.seq
        )
        # Reported in another order than claimed: the second, the third, the first.
        recording = asyncio.create_task(
            queue.record(OWNER, [succeeded(c, clock) for c in (second, third, first)], 0)
        )
        await until_waiting(watcher, 1)
        renewing = asyncio.create_task(
            queue.renew(OWNER, [first.seq, second.seq, third.seq], clock.now_ms() + 60_000)
        )
        await until_waiting(watcher, 2)
        patience = await deadlock_timeout(watcher)
        await holding.commit()
        released = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(recording, renewing, return_exceptions=True), 30
        )
        took = time.monotonic() - released
    finally:
        await blocker.close()
        await watcher.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    # A deadlock is only found after deadlock_timeout; the store then runs its victim again,
    # so it shows as the time the two took once the row was let go.
    assert took < 0.8 * patience, f"{took:.2f} s: deadlocked for deadlock_timeout"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"])
async def test_publishing_and_recording_outcomes_never_deadlock(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    database_url: str,
    backend: str,
) -> None:
    created = [
        await create_endpoint(client, f"http://127.0.0.1:9/unused-{n}", retry_schedule=[0, 1])
        for n in range(2)
    ]
    low, high = sorted(e["id"] for e in created)
    # An update writes the row anew at the end of the table: publishes now meet the
    # endpoints in another order than their ids.
    changed = await client.patch(f"/v1/endpoints/{low}", json={"description": "moved"})
    assert changed.status_code == 200, changed.text
    await publish(client, "first", opted_in(0))
    queue = container.dispatcher.queue
    claimed = await queue.claim(
        OWNER, now_ms=clock.now_ms(), limit=10, lease_ms=60_000, rooms={}, default_room=10
    )
    if len(claimed.claims) != 2:
        raise RuntimeError(f"claimed {len(claimed.claims)} deliveries, not 2")

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    blocker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    try:
        # With statistics a table this small is read in storage order, not through its
        # tenant index, and a publish meets ``high`` first.
        await watcher.execute("ANALYZE endpoints")
        scanned = [r["id"] for r in await watcher.fetch(_SUBSCRIBED)]
        if scanned != [high, low]:
            raise RuntimeError(f"the endpoints are read in id order, {scanned}: no test")
        holding = blocker.transaction()
        await holding.start()
        # Keeps the recorder from locking ``high`` without keeping a publish from
        # inserting a delivery that refers to it.
        await blocker.execute("SELECT id FROM endpoints WHERE id = $1 FOR NO KEY UPDATE", high)
        recording = asyncio.create_task(
            queue.record(OWNER, [succeeded(c, clock) for c in claimed.claims], 0)
        )
        await until_waiting(watcher, 1)
        publishing = asyncio.create_task(
            client.post("/v1/events", json={"type": "PLAYER_OPTED_IN", "data": opted_in(1)})
        )
        # The publish either waits too (for the record's lock on ``low``), or goes through.
        await until_waiting(watcher, 2, unless=publishing.done)
        patience = await deadlock_timeout(watcher)
        await holding.commit()
        released = time.monotonic()
        recorded, published = await asyncio.wait_for(
            asyncio.gather(recording, publishing, return_exceptions=True), 30
        )
        took = time.monotonic() - released
    finally:
        await blocker.close()
        await watcher.close()
    assert not isinstance(recorded, BaseException), recorded
    assert isinstance(published, httpx.Response), published
    assert published.status_code == 202, published.text
    assert took < 0.8 * patience, f"{took:.2f} s: deadlocked for deadlock_timeout"


def succeeded(claim: Claim, clock: ManualClock) -> Outcome:
    now = clock.now_ms()
    result = AttemptResult(started_at_ms=now, duration_ms=1.0, status_code=200)
    attempt = Attempt(new_id("att", now_ms=now), claim.id, claim.attempts + 1, result)
    return Outcome(claim, attempt, Decision(DeliveryStatus.SUCCEEDED, None))


async def until_waiting(
    watcher: asyncpg.Connection, count: int, *, unless: Callable[[], bool] = lambda: False
) -> None:
    """Until ``count`` transactions of this database wait for a lock (or ``unless``)."""
    for _ in range(200):
        if unless() or await watcher.fetchval(_WAITING) >= count:
            return
        await asyncio.sleep(0.025)
    raise RuntimeError(f"{count} transactions never came to wait for a lock")


async def deadlock_timeout(watcher: asyncpg.Connection) -> float:
    """The server's ``deadlock_timeout``, in seconds."""
    millis: str = await watcher.fetchval(
        "SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'"
    )
    return int(millis) / 1000
