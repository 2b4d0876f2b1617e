"""PostgreSQL's pool: a pooled connection whose server process went away is replaced, not
lent; and one that answered a moment ago is lent without a round trip first."""

from __future__ import annotations

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
