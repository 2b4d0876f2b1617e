"""A PostgreSQL server restart in the middle of a run loses nothing and sends nothing twice.

A real ``croupier serve`` on PostgreSQL is delivering a batch, to a healthy receiver and to
one that fails half the time behind an ordered endpoint, when the server restarts under it.
Every connection in its pool dies, and the first transactions after the restart may meet
one of them (a pooled connection is pinged only after a second idle): the engine must retry
its claims and records until the server is back. More events published right after the
restart are accepted (a 5xx is tried again under the same id, which the API answers
idempotently). In the end every delivery is ``succeeded`` or ``dead`` as its schedule says,
each attempt arrived exactly once, and each key arrived in publish order.

PostgreSQL only: SQLite has no server to restart, so the test is not collected for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from typing import Any

import asyncpg
import pytest

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
    opted_in,
    publish,
    publish_keyed,
    telling,
    wait_final,
)
from tests.chaos.receivers import Answer, Flaky
from tests.conftest import BACKENDS, PG_ADMIN_URL
from tests.e2e.harness import Launcher, eventually

FIRST_BATCH = 80
SECOND_BATCH = 40
KEYS = 8
RESTART_AFTER = 20


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"])
async def test_a_postgresql_restart_mid_run_loses_nothing_and_sends_nothing_twice(
    launcher: Launcher, receivers: ReceiverFactory, backend: str
) -> None:
    started = time.monotonic()
    serve = await launcher.serve(
        time_scale=TIME_SCALE,
        idle_poll_seconds=0.05,
        # Ten seconds of real time: longer than the outage, so no lease runs out in it.
        lease_seconds=200,
        # Few requests at a time, each 50 ms: the batch takes a few seconds to go out.
        endpoint_max_in_flight=4,
        # Sent from the serving process: a sender child stamps attempts on the wall clock,
        # not the scaled one (test_scaled_time.py), and the retries' spacing is checked.
        senders=0,
        grpc_enabled=False,
    )
    async with serve.api() as api:
        steady = Target(
            await create_endpoint(
                api,
                (receiver := await receivers(Answer(delay_s=0.05))).url(),
                retry_schedule=[0, 1, 1, 1, 1],
            ),
            receiver,
        )
        flaky = Target(
            await create_endpoint(
                api,
                (receiver := await receivers(Flaky(seed=31))).url(),
                retry_schedule=[0, 1, 2, 4, 8],
                ordered=True,
                breaker=NO_BREAKER,
            ),
            receiver,
        )
        targets = [steady, flaky]
        # Held until the batch is in: the restart must land on deliveries, not publishes.
        for target in targets:
            target.receiver.hold()
        published = await publish_keyed(api, "before", FIRST_BATCH, KEYS)
        for target in targets:
            target.receiver.release()
        await eventually(
            lambda: len(steady.receiver.ids()) >= RESTART_AFTER,
            within_s=30,
            what=f"{RESTART_AFTER} arrivals before the restart",
        )

        try:
            first_start = await postmaster_started()
            at_restart = len(steady.receiver.ids())
            await pg_ctlcluster("restart")
            await until_postgres_accepts(within_s=60)
            assert await postmaster_started() > first_start, "PostgreSQL did not restart"
        finally:
            if not await postgres_accepts():
                await pg_ctlcluster("start")
                await until_postgres_accepts(within_s=60)
        assert at_restart < FIRST_BATCH, "the restart landed after the batch; it proves nothing"

        for n in range(SECOND_BATCH):
            event_id = f"after-{n:05d}"
            key = f"k{n % KEYS}"
            await publish(api, event_id, opted_in(n, key), ordering_key=key, tries=5)
            published[event_id] = (key, FIRST_BATCH + n)
        await wait_final(api, len(targets) * (FIRST_BATCH + SECOND_BATCH), within_s=60)
        found = await details(api, only=telling(targets))

    assert_schedule_kept(found, targets)
    assert assert_arrivals_match(found, targets) == 0
    assert_order_kept(flaky.receiver, published)
    assert steady.receiver.ids() == set(published)
    assert {d["status"] for d in found if d["endpoint_id"] == steady.id} == {"succeeded"}
    # The outage was felt, and lived through: the engine logged failed transactions and
    # went on.
    log = serve.output()
    assert "failed; retrying" in log, log[-4000:]
    print(
        f"\n[{backend}] restarted at {at_restart}/{FIRST_BATCH} events on the healthy "
        f"endpoint; {log.count('failed; retrying')} failed transactions retried; "
        f"{time.monotonic() - started:.1f} s in all"
    )


async def pg_ctlcluster(action: str) -> None:
    """``pg_ctlcluster <version> main <action>`` on the one local cluster."""
    [version] = os.listdir("/etc/postgresql")
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        version,
        "main",
        action,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"pg_ctlcluster {action} ran over 60 s") from None
    assert proc.returncode == 0, f"pg_ctlcluster {action}: {out.decode(errors='replace')}"


async def postmaster_started() -> datetime:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        started: datetime = await conn.fetchval("SELECT pg_postmaster_start_time()")
        return started
    finally:
        await conn.close()


async def postgres_accepts() -> bool:
    try:
        conn: Any = await asyncpg.connect(PG_ADMIN_URL, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def until_postgres_accepts(*, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not await postgres_accepts():
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL still refuses connections after {within_s} s")
        await asyncio.sleep(0.1)
