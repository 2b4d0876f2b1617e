"""PostgreSQL's pool: a pooled connection whose server process went away is replaced, not
lent; and one that answered a moment ago is lent without a round trip first."""

from __future__ import annotations

import asyncio
import functools

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from croupier.store import engine
from croupier.store.engine import open_database


def _backend(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


async def test_a_connection_whose_server_went_away_is_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_S", 0.0)
    db = open_database(postgres_url, pool_size=1)
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    try:
        first = await db.run(_backend)
        admin = await asyncpg.connect(dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        second = await db.run(_backend)
        assert second != first
    finally:
        await db.close()


async def test_within_the_idle_window_a_lost_connection_fails_once_then_is_dropped(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lent without a ping (it answered a moment ago), the dead connection fails the one
    # transaction that meets it; the pool drops it, and the next transaction is served.
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_S", 3600.0)
    db = open_database(postgres_url, pool_size=1)
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    try:
        first = await db.run(_backend)
        admin = await asyncpg.connect(dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        with pytest.raises(DBAPIError) as lost:
            await db.run(_backend)
        assert lost.value.connection_invalidated
        assert await db.run(_backend) != first
    finally:
        await db.close()


async def test_a_transaction_chosen_as_a_deadlock_victim_is_run_again(postgres_url: str) -> None:
    # A real deadlock: two transactions lock two rows in opposite orders. The server rolls
    # one back; croupier runs that one again, and both succeed.
    db = open_database(postgres_url, pool_size=4)
    setup = "CREATE TABLE IF NOT EXISTS deadlock_probe (id int PRIMARY KEY, n int)"
    try:
        await db.run(lambda c: c.execute(text(setup)))
        await db.run(lambda c: c.execute(text("DELETE FROM deadlock_probe")))
        await db.run(lambda c: c.execute(text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)")))
        runs: list[str] = []

        def lock(name: str, a: int, b: int, c: Connection) -> None:
            runs.append(name)
            c.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"), {"i": a})
            if runs.count(name) == 1:
                # Long enough for the other to take its first row (server-side, so both
                # transactions go on side by side).
                c.execute(text("SELECT pg_sleep(0.3)"))
            c.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"), {"i": b})

        await asyncio.gather(
            db.run(functools.partial(lock, "ab", 1, 2)),
            db.run(functools.partial(lock, "ba", 2, 1)),
        )
        counts = await db.run(
            lambda c: c.execute(text("SELECT n FROM deadlock_probe ORDER BY id")).scalars().all()
        )
        # Each transaction committed once: the victim's first run left nothing behind.
        assert list(counts) == [2, 2]
        assert len(runs) == 3
    finally:
        await db.run(lambda c: c.execute(text("DROP TABLE IF EXISTS deadlock_probe")))
        await db.close()
