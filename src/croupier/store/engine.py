"""Engines for the two backends: an embedded SQLite file (WAL) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

#: Execution option a unit of work sets to take SQLite's write lock at BEGIN.
WRITE_OPTION = "croupier_write"


def async_url(url: str) -> str:
    """Map the user-facing URL to the async driver: ``sqlite:///x`` -> ``sqlite+aiosqlite:///x``."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def is_sqlite(url: str) -> bool:
    return make_url(async_url(url)).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine with the settings croupier relies on."""
    aurl = async_url(url)
    if make_url(aurl).get_backend_name() == "sqlite":
        return _sqlite_engine(aurl)
    # Every unit of work ends its own transaction, so the pool's extra rollback on check-in
    # is a wasted round trip on the hot path.
    return create_async_engine(
        aurl,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_reset_on_return=None,
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(
        url, connect_args={"timeout": 30}, pool_reset_on_return=None, pool_use_lifo=True
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL lets readers run beside the one writer; NORMAL survives a killed process
        # (the issue is power loss, which WAL+NORMAL may roll back by the last commits only).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that upgrades from read
        # to write can fail at once with "database is locked" instead of waiting its turn.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@asynccontextmanager
async def transaction(engine: AsyncEngine, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
    """A connection inside one transaction that commits when the block ends without error."""
    async with writer_turn(engine, write), engine.connect() as conn:
        if write:
            conn = await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            yield conn


@asynccontextmanager
async def writer_turn(engine: AsyncEngine, write: bool) -> AsyncIterator[None]:
    """On SQLite, writers of this process take turns here rather than in SQLite's busy
    handler, which sleeps in growing steps and serves waiters in no order: queuing on an
    asyncio lock is fair and wastes no time. PostgreSQL needs no turns."""
    if not write or engine.dialect.name != "sqlite":
        yield
        return
    lock = _WRITE_LOCKS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITE_LOCKS[engine.sync_engine] = asyncio.Lock()
    async with lock:
        yield


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()
