"""SQLite's one writer has two lanes: money goes before a backlog of other writes."""

from __future__ import annotations

import asyncio
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
        release.set()
        await first
        await db.run(lambda conn: ran.append("after"))
        assert ran == ["after"]
    finally:
        release.set()
        await db.close()
