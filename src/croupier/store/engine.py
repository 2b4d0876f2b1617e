"""The two backends behind one call: run a function inside a transaction, where the I/O is.

Every store operation is a plain synchronous function of a SQLAlchemy ``Connection``
(a "transaction function"), handed to :meth:`Database.run` in one go:

* **SQLite** runs it in a thread, on the standard ``sqlite3`` driver. Writers queue for
  one writer thread, so this process never meets SQLite's busy handler (which sleeps in
  growing steps and serves waiters in no order); readers use a small pool beside it, which
  WAL allows. A transaction is one hop from the event loop to a thread and back. The
  writer's queue has two lanes: ``urgent`` work (money) goes before whatever the
  dispatcher queued, so a backlog of deliveries to record never delays a bet.
  An async driver costs four hops per statement (cursor, execute, fetch, close), each
  waiting behind the whole busy event loop: measured under load, a five-statement
  transaction took 84 ms that way and 17 ms as one hop.
* **PostgreSQL** runs it on asyncpg, through ``AsyncConnection.run_sync``, on an event
  loop of its own thread, so the driver's round trips never wait behind the API's work.

One function thus serves both backends, and a transaction can never be left open across
an ``await`` of the caller's: it commits when the function returns and rolls back when it
raises.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import structlog
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from croupier.store.prepared import release, rollback_to, savepoint
from croupier.store.runner import StoreThread

T = TypeVar("T")

log = structlog.get_logger("croupier.store")

#: Execution option a write transaction sets, to take SQLite's write lock at BEGIN.
WRITE_OPTION = "croupier_write"
#: How often the write-ahead log is copied into the SQLite file.
CHECKPOINT_EVERY_S = 0.5
#: Reader threads beside SQLite's one writer.
_SQLITE_READERS = 3


class Database(ABC):
    """A backend that runs transaction functions. Use :func:`open_database`."""

    #: ``"sqlite"`` or ``"postgresql"``.
    dialect: str
    #: The URL with the driver croupier uses.
    url: str

    @abstractmethod
    async def run(
        self, fn: Callable[[Connection], T], *, write: bool = True, urgent: bool = False
    ) -> T:
        """Call ``fn(connection)`` inside one transaction and return what it returns.

        It commits when ``fn`` returns, and rolls back when it raises. ``fn`` runs on
        another thread: it must touch only the connection and plain values. ``urgent``
        writes go first where writes queue (SQLite).
        """

    async def ping(self) -> None:
        """Raise unless the database answers."""
        await self.run(_select_one, write=False)

    @abstractmethod
    async def close(self) -> None:
        """Finish queued transactions, then close every connection."""


def open_database(url: str, *, pool_size: int = 20) -> Database:
    """The backend for a user-facing URL (``sqlite:///file.db`` or ``postgresql://...``)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        return SqliteDatabase(parsed.set(drivername="sqlite+pysqlite").render_as_string())
    if parsed.drivername in ("postgresql", "postgresql+asyncpg"):
        return PostgresDatabase(
            parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
            pool_size=pool_size,
        )
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _sqlite_engine(url)
        self._writer = _Writer(self.engine)
        self._readers = ThreadPoolExecutor(
            _SQLITE_READERS, thread_name_prefix="croupier-sqlite-reader"
        )
        self._checkpointer = _Checkpointer(self.engine)

    async def run(
        self, fn: Callable[[Connection], T], *, write: bool = True, urgent: bool = False
    ) -> T:
        if write:
            return await asyncio.wrap_future(self._writer.submit(fn, urgent=urgent))
        work = partial(_sync_transaction, self.engine, fn, False)
        return await asyncio.get_running_loop().run_in_executor(self._readers, work)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # Let queued transactions finish: a caller may still be waiting on one.
        await loop.run_in_executor(None, self._writer.shutdown)
        await loop.run_in_executor(None, partial(self._readers.shutdown, wait=True))
        await loop.run_in_executor(None, self._checkpointer.stop)
        self.engine.dispose()


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int) -> None:
        self.url = url
        # Every transaction ends itself, so the pool's extra rollback on check-in would
        # be a wasted round trip on the hot path. No overflow: a connection opened for a
        # burst and closed after it costs the server a process and the client its type
        # introspection, far more than waiting a moment for a pooled one.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_reset_on_return=None,
        )
        _ping_when_idle(self.engine.sync_engine)
        self._thread = StoreThread()

    async def run(
        self, fn: Callable[[Connection], T], *, write: bool = True, urgent: bool = False
    ) -> T:
        # Each transaction has a connection of its own: nothing queues to be put first.
        for attempt in range(1, _RETRIES_ON_CONFLICT + 1):
            try:
                return await self._thread.call(self._transaction, fn)
            except DBAPIError as exc:
                # The server chose this transaction as a deadlock's victim (or refused it
                # for a serialization conflict) and rolled it back whole: it is safe to run
                # again, and the caller must not see a 500 for it.
                if _sqlstate(exc) not in _RETRYABLE_SQLSTATES or attempt == _RETRIES_ON_CONFLICT:
                    raise
                log.info("transaction retried", sqlstate=_sqlstate(exc), attempt=attempt)
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    async def _transaction(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn, conn.begin():
            return await conn.run_sync(fn)

    async def close(self) -> None:
        try:
            await self._thread.call(self.engine.dispose)
        finally:
            self._thread.close()


#: deadlock_detected, serialization_failure: the server rolled the transaction back.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
_RETRIES_ON_CONFLICT = 3


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


class _Checkpointer:
    """Copies the write-ahead log into the database file from a thread of its own.

    SQLite checkpoints by itself inside the commit that crosses 1,000 log pages: that
    commit copies the pages and waits for the disk, and every write queued behind it waits
    too (a few milliseconds at the 99th percentile of a bet). Here the writer never
    checkpoints (``wal_autocheckpoint=0``); this thread does, passively, every
    :data:`CHECKPOINT_EVERY_S`, without blocking the writer or the readers.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, name="croupier-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            try:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                log.warning("a WAL checkpoint failed; the next one will try again", exc_info=True)


class _Writer:
    """SQLite's one writer thread, with two lanes: urgent work first, then the rest, each
    in the order it came. Cancelling a caller cancels its work if it has not begun.

    Urgent work queued together is committed together (a group commit): each piece runs in
    a savepoint of one transaction, so a piece that raises undoes only itself, and every
    caller hears back once the commit is done. A commit and its transaction were a third
    of a money movement's cost on SQLite; under load they are shared.
    """

    _URGENT, _NORMAL, _LAST = 0, 1, 2
    #: The most urgent pieces one transaction carries.
    GROUP = 16

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.PriorityQueue[
            tuple[int, int, Callable[[Connection], Any] | None, Future[Any]]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(
            target=self._work, name="croupier-sqlite-writer", daemon=True
        )
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T], *, urgent: bool) -> Future[T]:
        """Run ``fn`` in a write transaction (urgent: maybe shared with other urgent work)."""
        done: Future[T] = Future()
        lane = self._URGENT if urgent else self._NORMAL
        self._queue.put((lane, next(self._order), fn, done))
        return done

    def shutdown(self) -> None:
        """Finish everything queued, then stop the thread."""
        self._queue.put((self._LAST, next(self._order), None, Future()))
        self._thread.join()

    def _work(self) -> None:
        while True:
            lane, _, fn, done = self._queue.get()
            if fn is None:
                return
            group = [(fn, done)]
            while lane == self._URGENT and len(group) < self.GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0] != self._URGENT:
                    self._queue.put(item)  # its place is kept: the order is in the item
                    break
                group.append((item[2], item[3]))  # type: ignore[arg-type]
            running = [(f, d) for f, d in group if d.set_running_or_notify_cancel()]
            if len(running) == 1:
                f, d = running[0]
                try:
                    d.set_result(_sync_transaction(self._engine, f, True))
                except BaseException as exc:
                    d.set_exception(exc)
            elif running:
                self._together(running)

    def _together(self, group: list[tuple[Callable[[Connection], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    for fn, done in group:
                        savepoint(conn, "croupier_group")
                        try:
                            result = fn(conn)
                        except Exception as exc:
                            rollback_to(conn, "croupier_group")
                            outcomes.append((done, None, exc))
                        else:
                            outcomes.append((done, result, None))
                        release(conn, "croupier_group")
        except BaseException as exc:
            # The commit itself failed: nothing of the group is stored.
            for _, done in group:
                done.set_exception(exc)
            return
        for done, result, error in outcomes:
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)


#: A pooled PostgreSQL connection idle for longer than this is pinged before it is lent.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before lending it, as ``pool_pre_ping`` would, but only
    once it has been idle a while: under load every transaction paid a round trip for a
    connection that had answered a moment before. A server that goes away within the
    second fails the transaction that meets it, which then surfaces as a driver error,
    and the connection is dropped from the pool."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _lend(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool drops this connection and lends (or opens) another.
            raise DisconnectionError("a pooled connection no longer answers") from exc


def _sync_transaction(engine: Engine, fn: Callable[[Connection], T], write: bool) -> T:
    with engine.connect() as conn:
        if write:
            conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            return fn(conn)


def _select_one(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


def _sqlite_engine(url: str) -> Engine:
    # Connections move between the reader threads, one transaction at a time.
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=_SQLITE_READERS + 2,
        max_overflow=4,
        pool_reset_on_return=None,
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL lets readers run beside the one writer; NORMAL survives a killed process
        # (the issue is power loss, which WAL+NORMAL may roll back by the last commits only).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Checkpoints run in a thread of their own (_Checkpointer), not inside a commit.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Only another process (an operator's CLI command) can hold the lock: wait for it.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that upgrades from read
        # to write can fail at once with "database is locked" instead of waiting its turn.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
