"""SQLite's one writer has two lanes: money goes before a backlog of other writes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from croupier.store.engine import open_database


async def test_urgent_writes_overtake_queued_ones_and_every_write_still_runs(
    tmp_path: Path,
) -> None:
    db = open_database(f"sqlite:///{tmp_path}/lanes.db")
    done: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def blocking(conn: Connection) -> None:
        started.set()
        release.wait(10)
        conn.execute(text("SELECT 1"))
        done.append("first")

    def step(name: str) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            conn.execute(text("SELECT 1"))
            done.append(name)

        return run

    try:
        first = asyncio.create_task(db.run(blocking))
        await asyncio.to_thread(started.wait, 10)
        queued = [asyncio.create_task(db.run(step(f"normal-{n}"))) for n in range(5)]
        await asyncio.sleep(0.05)  # they are all queued behind the first
        money = asyncio.create_task(db.run(step("money"), urgent=True))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, money, *queued)
        assert done == ["first", "money", *(f"normal-{n}" for n in range(5))]
    finally:
        release.set()
        await db.close()


async def test_a_cancelled_write_that_has_not_begun_never_runs(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path}/lanes.db")
    ran: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def blocking(conn: Connection) -> None:
        started.set()
        release.wait(10)

    def never(conn: Connection) -> None:
        ran.append("never")

    try:
        first = asyncio.create_task(db.run(blocking))
        await asyncio.to_thread(started.wait, 10)
        doomed = asyncio.create_task(db.run(never, urgent=True))
        await asyncio.sleep(0.05)
        doomed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await doomed
        # The cancel reaches the writer's queue through a callback of the event loop.
        await asyncio.sleep(0.05)
        release.set()
        await first
        await db.run(lambda conn: ran.append("after"))
        assert ran == ["after"]
    finally:
        release.set()
        await db.close()


async def test_urgent_writes_queued_together_commit_together_and_a_failure_undoes_only_itself(
    tmp_path: Path,
) -> None:
    db = open_database(f"sqlite:///{tmp_path}/lanes.db")
    started = threading.Event()
    release = threading.Event()

    def blocking(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        started.set()
        release.wait(10)

    def insert(n: int) -> Callable[[Connection], int]:
        def run(conn: Connection) -> int:
            conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            return n

        return run

    try:
        first = asyncio.create_task(db.run(blocking))
        await asyncio.to_thread(started.wait, 10)
        # Queued behind the first, they run as one group; 3 twice breaks the primary key.
        tasks = [asyncio.create_task(db.run(insert(n), urgent=True)) for n in (1, 2, 3, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[:3] == [1, 2, 3] and results[4] == 4
        assert isinstance(results[3], Exception) and "UNIQUE" in str(results[3])
        stored = await db.run(lambda conn: [r[0] for r in conn.execute(text("SELECT n FROM t"))])
        assert sorted(stored) == [1, 2, 3, 4]
    finally:
        release.set()
        await db.close()
