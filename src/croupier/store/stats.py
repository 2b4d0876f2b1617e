"""Attempts counted per endpoint and minute (the ``endpoint_stats`` table).

The recorder adds each batch of outcomes here in the transaction that records them, with
one upsert per endpoint and minute that adds to the counters: workers on PostgreSQL can
count into the same row side by side, and a count is never lost or made twice.

Endpoint stats read the sums over recent windows back (:func:`window_totals`), and the
upkeep forgets minutes past their retention (:func:`purge_stats`) a chunk at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, String, bindparam, case, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from croupier.domain.health import BUCKETS, bucket_of, minute_of
from croupier.services.ports import RecentError, WindowTotals
from croupier.store import tables as t
from croupier.store.tables import HISTOGRAM_COLUMNS


class AttemptStat(NamedTuple):
    """What the stats keep of one attempt."""

    endpoint_id: str
    tenant_id: str
    started_at_ms: int
    duration_ms: float
    ok: bool
    status_code: int | None
    error: str | None


@dataclass
class _Minute:
    tenant_id: str
    attempts: int = 0
    failures: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    #: (at, error, status code) of the minute's latest failure in this batch.
    last_error: tuple[int, str, int | None] | None = None


def record_attempt_stats(conn: Connection, stats: Sequence[AttemptStat]) -> None:
    """Add ``stats`` to their endpoints' minutes."""
    minutes: dict[tuple[str, int], _Minute] = {}
    for s in stats:
        key = (s.endpoint_id, minute_of(s.started_at_ms))
        m = minutes.get(key)
        if m is None:
            m = minutes[key] = _Minute(s.tenant_id)
        m.attempts += 1
        m.histogram[bucket_of(s.duration_ms)] += 1
        if not s.ok:
            m.failures += 1
            if m.last_error is None or s.started_at_ms >= m.last_error[0]:
                message = s.error or (f"HTTP {s.status_code}" if s.status_code else "failed")
                m.last_error = (s.started_at_ms, message, s.status_code)
    if not minutes:
        return
    rows = []
    for (endpoint_id, minute), m in sorted(minutes.items()):
        last: tuple[int | None, str | None, int | None] = m.last_error or (None, None, None)
        at, error, code = last
        rows.append(
            {
                "endpoint_id": endpoint_id,
                "minute": minute,
                "tenant_id": m.tenant_id,
                "attempts": m.attempts,
                "failures": m.failures,
                **dict(zip(HISTOGRAM_COLUMNS, m.histogram, strict=True)),
                "last_error": error,
                "last_status_code": code,
                "last_error_at": at,
            }
        )
    conn.execute(_upsert(conn.dialect.name), rows)


def window_counts(conn: Connection, endpoint_id: str, since_ms: int) -> tuple[int, int]:
    """(attempts, failures) of an endpoint in the minutes from the one ``since_ms`` is in."""
    row = conn.execute(
        _window_statement(), {"endpoint": endpoint_id, "since": minute_of(since_ms)}
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


#: Minutes :func:`purge_stats` forgets per call: each call is one short transaction, so
#: forgetting a day of minutes never holds the writers back for long.
PURGE_CHUNK = 1000


class SqlStatsRepo:
    """Endpoint stats inside a unit of work (:class:`croupier.services.ports.StatsRepo`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def windows(
        self, tenant_id: str, endpoint_id: str, *, now_ms: int, windows_ms: Sequence[int]
    ) -> list[WindowTotals]:
        return window_totals(
            self.conn, tenant_id, endpoint_id, now_ms=now_ms, windows_ms=windows_ms
        )

    def purge(self, before_ms: int, limit: int) -> int:
        return purge_stats(self.conn, before_ms, limit=limit)


def window_totals(
    conn: Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    now_ms: int,
    windows_ms: Sequence[int],
) -> list[WindowTotals]:
    """The tenant's endpoint's totals over each window ending at ``now_ms``, in order.

    A window of ``w`` ms covers the minutes that start at or after ``minute_of(now_ms -
    w)``: whole minutes, so it reaches up to a minute further back than ``w``. Minutes
    after ``now_ms`` (a worker whose clock runs ahead) count too. Two statements: the sums
    of every window in one pass over the longest, and the latest error.
    """
    if not windows_ms:
        return []
    since = [minute_of(now_ms - w) for w in windows_ms]
    params: dict[str, Any] = {"tenant": tenant_id, "endpoint": endpoint_id, "since": min(since)}
    params.update({f"since{i}": start for i, start in enumerate(since)})
    sums = conn.execute(_totals_statement(len(since)), params).one()
    latest = conn.execute(_latest_error_statement(), params).first()
    width = 2 + BUCKETS
    totals = []
    for i, start in enumerate(since):
        counts = [int(n or 0) for n in sums[i * width : (i + 1) * width]]
        last_error = None
        # The latest error is in every window that reaches back to its minute.
        if latest is not None and latest.minute >= start:
            last_error = RecentError(
                latest.last_error, latest.last_status_code, int(latest.last_error_at)
            )
        totals.append(WindowTotals(counts[0], counts[1], tuple(counts[2:]), last_error))
    return totals


def purge_stats(conn: Connection, before_ms: int, *, limit: int = PURGE_CHUNK) -> int:
    """Forget up to ``limit`` endpoint-minutes that started before ``before_ms``; how many.
    Fewer than ``limit`` means none are left; else call again, in a new transaction."""
    s = t.endpoint_stats.c
    chunk = select(s.endpoint_id, s.minute).where(s.minute < before_ms).limit(limit)
    result = conn.execute(
        delete(t.endpoint_stats).where(tuple_(s.endpoint_id, s.minute).in_(chunk))
    )
    return int(result.rowcount)


@functools.cache
def _window_statement() -> Any:
    s = t.endpoint_stats.c
    return select(func.sum(s.attempts), func.sum(s.failures)).where(
        s.endpoint_id == bindparam("endpoint", type_=String),
        s.minute >= bindparam("since", type_=BigInteger),
    )


@functools.cache
def _upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE that adds the new counts to the stored ones, and
    keeps the later of the two last errors."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(t.endpoint_stats)
    table, new = t.endpoint_stats.c, stmt.excluded
    newer = func.coalesce(new.last_error_at, -1) >= func.coalesce(table.last_error_at, -1)

    def latest(name: str) -> Any:
        return case((newer, new[name]), else_=table[name])

    return stmt.on_conflict_do_update(
        index_elements=[table.endpoint_id, table.minute],
        set_={
            "attempts": table.attempts + new.attempts,
            "failures": table.failures + new.failures,
            **{name: table[name] + new[name] for name in HISTOGRAM_COLUMNS},
            "last_error": latest("last_error"),
            "last_status_code": latest("last_status_code"),
            "last_error_at": latest("last_error_at"),
        },
    )


@functools.cache
def _totals_statement(windows: int) -> Any:
    """One row: per window (``since0``, ``since1``, ...), the sums of the attempts, the
    failures and each histogram bucket, over the minutes from ``since`` (the earliest)."""
    s = t.endpoint_stats.c
    summed = [s.attempts, s.failures, *(s[name] for name in HISTOGRAM_COLUMNS)]
    columns: list[Any] = []
    for i in range(windows):
        inside = s.minute >= bindparam(f"since{i}", type_=BigInteger)
        # No ELSE: SUM skips the NULLs of the minutes outside the window.
        columns.extend(func.sum(case((inside, column))) for column in summed)
    return select(*columns).where(*_one_endpoint_since())


@functools.cache
def _latest_error_statement() -> Any:
    s = t.endpoint_stats.c
    return (
        select(s.minute, s.last_error, s.last_status_code, s.last_error_at)
        .where(*_one_endpoint_since(), s.last_error.is_not(None), s.last_error_at.is_not(None))
        # The primary key's order, read backwards: the latest minute with an error.
        .order_by(s.minute.desc())
        .limit(1)
    )


def _one_endpoint_since() -> tuple[Any, ...]:
    """The tenant's endpoint, from the minute ``since``: the tenant is always named, so an
    endpoint id from another tenant finds nothing."""
    s = t.endpoint_stats.c
    return (
        s.tenant_id == bindparam("tenant", type_=String),
        s.endpoint_id == bindparam("endpoint", type_=String),
        s.minute >= bindparam("since", type_=BigInteger),
    )
