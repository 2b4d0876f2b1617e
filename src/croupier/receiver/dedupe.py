"""Duplicate detection by event id.

croupier delivers at least once, so the same event can arrive more than once, always with
the same id. A :class:`Dedupe` remembers the ids it has seen for a while: :meth:`claim`
says whether this is the first copy, and :meth:`release` forgets an id again, so that a
delivery whose handler failed is processed when croupier retries it.
"""

from __future__ import annotations

import inspect
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["DEFAULT_TTL_S", "Dedupe", "MemoryDedupe", "RedisDedupe", "SQLiteDedupe"]

#: Seven days: past croupier's default retry schedule (about 41 hours), with room for replays.
DEFAULT_TTL_S = 7 * 86400
_INSTALL_REDIS = 'pip install "croupier[receiver-redis]"'


@runtime_checkable
class Dedupe(Protocol):
    """Remembers which event ids were already handled."""

    def claim(self, event_id: str) -> bool:
        """Atomically mark ``event_id`` as seen: True the first time, False for a duplicate."""
        ...

    def release(self, event_id: str) -> None:
        """Forget ``event_id``, so that its next delivery is claimed (and handled) again."""
        ...


class _Closing(ABC):
    """``with store:`` closes the store at the end of the block."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryDedupe:
    """Ids kept in this process's memory: for one process, and for tests.

    Lost on restart and not shared between workers. At most ``max_entries`` ids are kept;
    beyond that the oldest are forgotten first, so a very late duplicate of one of them
    would be handled again. ``now`` is a clock in seconds (monotonic by default).
    """

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        max_entries: int = 100_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._now = now
        self._lock = threading.Lock()
        # Id -> expiry, in claim order: with one TTL for all, also in expiry order.
        self._expiries: OrderedDict[str, float] = OrderedDict()

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen within the TTL, else False."""
        with self._lock:
            now = self._now()
            self._purge(now)
            if event_id in self._expiries:
                return False
            self._expiries[event_id] = now + self._ttl_s
            if len(self._expiries) > self._max_entries:
                self._expiries.popitem(last=False)
            return True

    def release(self, event_id: str) -> None:
        """Forget ``event_id``."""
        with self._lock:
            self._expiries.pop(event_id, None)

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._now())
            return len(self._expiries)

    def _purge(self, now: float) -> None:
        while self._expiries:
            event_id, expires_at = next(iter(self._expiries.items()))
            if expires_at > now:
                return
            del self._expiries[event_id]


class SQLiteDedupe(_Closing):
    """Ids kept in an SQLite file: survives restarts; shared by the processes of one host.

    Each claim is one ``INSERT ... ON CONFLICT`` statement that succeeds only if the id is
    new or its old row has expired, so two processes cannot both claim the same id. Safe to
    share between threads. Close it (or use it as a context manager) when done.
    ``now`` returns Unix seconds; it must agree across restarts, so it is wall-clock time.
    """

    #: Expired rows are deleted after this many claims.
    PURGE_EVERY = 1000

    def __init__(
        self,
        path: str | os.PathLike[str],
        ttl_s: float = DEFAULT_TTL_S,
        *,
        now: Callable[[], float] = time.time,
        table: str = "croupier_dedupe",
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if not table.isidentifier():
            raise ValueError("table must be a plain identifier")
        self._ttl_s = ttl_s
        self._now = now
        self._table = table
        self._lock = threading.Lock()
        self._claims = 0
        # Autocommit: every statement is its own transaction. The connection is shared
        # between threads under the lock; other processes wait on SQLite's own lock.
        self._conn = sqlite3.connect(
            os.fspath(path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                "(event_id TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
        except BaseException:
            self._conn.close()
            raise
        self._claim_sql = (
            f"INSERT INTO {table} (event_id, expires_at) VALUES (?, ?) "  # noqa: S608 - identifier checked
            "ON CONFLICT (event_id) DO UPDATE SET expires_at = excluded.expires_at "
            f"WHERE {table}.expires_at <= ?"
        )

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen within the TTL, else False."""
        with self._lock:
            now = self._now()
            cursor = self._conn.execute(self._claim_sql, (event_id, now + self._ttl_s, now))
            claimed = cursor.rowcount == 1
            self._claims += 1
            if self._claims % self.PURGE_EVERY == 0:
                self._purge(now)
            return claimed

    def release(self, event_id: str) -> None:
        """Forget ``event_id``."""
        with self._lock:
            self._conn.execute(f"DELETE FROM {self._table} WHERE event_id = ?", (event_id,))  # noqa: S608

    def purge(self) -> int:
        """Delete expired rows now; returns how many. Claims also do this now and then."""
        with self._lock:
            return self._purge(self._now())

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def _purge(self, now: float) -> int:
        sql = f"DELETE FROM {self._table} WHERE expires_at <= ?"  # noqa: S608
        return self._conn.execute(sql, (now,)).rowcount


class RedisDedupe(_Closing):
    """Ids kept in Redis: shared by every process and host of the receiver.

    A claim is ``SET {prefix}{id} 1 NX EX {ttl_s}``: atomic, and Redis expires the key.
    ``client_or_url`` is a ``redis://`` URL (this object then owns the client and
    :meth:`close` closes it) or an existing synchronous ``redis.Redis`` client (left open).
    Needs the redis package: ``pip install "croupier[receiver-redis]"``.
    """

    def __init__(
        self,
        client_or_url: Redis | str,
        ttl_s: int = DEFAULT_TTL_S,
        *,
        prefix: str = "croupier:dedupe:",
    ) -> None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
            raise ValueError("ttl_s must be a whole number of seconds, at least 1")
        self._ttl_s = ttl_s
        self._prefix = prefix
        self._owned = isinstance(client_or_url, str)
        if isinstance(client_or_url, str):
            try:
                import redis
            except ImportError as exc:
                raise ImportError(f"RedisDedupe needs the redis package: {_INSTALL_REDIS}") from exc
            self._client: Redis = redis.Redis.from_url(client_or_url)
        else:
            self._client = client_or_url

    @property
    def client(self) -> Redis:
        """The Redis client in use."""
        return self._client

    def key(self, event_id: str) -> str:
        """The Redis key that records ``event_id``."""
        return self._prefix + event_id

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen within the TTL, else False."""
        result = self._client.set(self.key(event_id), b"1", nx=True, ex=self._ttl_s)
        return _sync_result(result) is True

    def release(self, event_id: str) -> None:
        """Forget ``event_id``."""
        _sync_result(self._client.delete(self.key(event_id)))

    def close(self) -> None:
        """Close the client if this object created it from a URL."""
        if self._owned:
            self._client.close()


def _sync_result(result: Any) -> Any:
    if inspect.isawaitable(result):
        # An asyncio client hands back a coroutine, which would read as "claimed" forever.
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError("RedisDedupe needs a synchronous redis client (redis.Redis)")
    return result
