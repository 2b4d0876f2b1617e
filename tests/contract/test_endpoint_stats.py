"""The read side of endpoint stats, on every backend: the sums over windows of whole
minutes, the latest error, tenant isolation, and forgetting old minutes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from croupier.domain.endpoints import Endpoint
from croupier.domain.health import BUCKETS, bucket_of, minute_of
from croupier.domain.tenants import Tenant
from croupier.services.ports import RecentError, WindowTotals
from croupier.store.engine import Database
from croupier.store.repositories import SqlStore, SqlUnitOfWork
from croupier.store.stats import AttemptStat, purge_stats, record_attempt_stats, window_totals
from croupier.store.tables import endpoint_stats

MINUTE = 60_000
HOUR = 60 * MINUTE
#: Half a minute past a minute's start: windows reach back to whole minutes.
NOW = minute_of(1_700_000_000_000) + 30_000
WINDOWS = (5 * MINUTE, HOUR, 24 * HOUR)


async def seed(store: SqlStore, *endpoints: tuple[str, str]) -> None:
    """Tenants and their endpoints, from (tenant, endpoint id) pairs."""

    def add(uow: SqlUnitOfWork) -> None:
        for tenant in dict.fromkeys(tenant for tenant, _ in endpoints):
            uow.tenants.add(Tenant(tenant, tenant, NOW))
        for tenant, endpoint_id in endpoints:
            uow.endpoints.add(
                Endpoint(
                    id=endpoint_id,
                    tenant_id=tenant,
                    url="http://127.0.0.1:1/hook",
                    secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    event_types=("t",),
                    headers={},
                )
            )

    await store.run(add)


def ok(endpoint_id: str, at_ms: int, duration_ms: float = 4.0, tenant: str = "a") -> AttemptStat:
    return AttemptStat(endpoint_id, tenant, at_ms, duration_ms, True, 200, None)


def failed(
    endpoint_id: str,
    at_ms: int,
    *,
    status: int | None = 500,
    error: str | None = None,
    duration_ms: float = 40.0,
    tenant: str = "a",
) -> AttemptStat:
    return AttemptStat(endpoint_id, tenant, at_ms, duration_ms, False, status, error)


async def record(db: Database, *stats: AttemptStat) -> None:
    await db.run(lambda conn: record_attempt_stats(conn, stats))


async def totals(
    store: SqlStore, endpoint_id: str, tenant: str = "a", now_ms: int = NOW
) -> list[WindowTotals]:
    return await store.run(
        lambda uow: uow.stats.windows(tenant, endpoint_id, now_ms=now_ms, windows_ms=WINDOWS),
        write=False,
    )


def histogram(*durations_ms: float) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for d in durations_ms:
        counts[bucket_of(d)] += 1
    return tuple(counts)


async def count_rows(db: Database) -> int:
    def rows(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(endpoint_stats)).scalar_one())

    return await db.run(rows, write=False)


async def test_each_window_sums_the_whole_minutes_that_start_within_it(
    db: Database, store: SqlStore
) -> None:
    await seed(store, ("a", "ep_1"))
    minute = minute_of(NOW)
    await record(
        db,
        ok("ep_1", NOW, 4),
        failed("ep_1", NOW + 1, duration_ms=40),
        # 5 minutes and 30 seconds ago: its minute starts within the 5 minutes' reach
        ok("ep_1", minute - 5 * MINUTE, 120),
        ok("ep_1", minute - 6 * MINUTE, 800),
        ok("ep_1", minute - 60 * MINUTE, 2_500),
        failed("ep_1", minute - 61 * MINUTE, duration_ms=9),
        ok("ep_1", minute - 24 * HOUR, 1),
        ok("ep_1", minute - 25 * HOUR, 1),
    )
    five, hour, day = await totals(store, "ep_1")
    assert (five.attempts, five.failures) == (3, 1)
    assert five.histogram == histogram(4, 40, 120)
    assert (hour.attempts, hour.failures) == (5, 1)
    assert hour.histogram == histogram(4, 40, 120, 800, 2_500)
    assert (day.attempts, day.failures) == (7, 2)
    assert day.histogram == histogram(4, 40, 120, 800, 2_500, 9, 1)


async def test_an_endpoint_without_attempts_has_empty_windows(
    db: Database, store: SqlStore
) -> None:
    await seed(store, ("a", "ep_1"))
    # attempts older than the longest window do not count either
    await record(db, failed("ep_1", NOW - 25 * HOUR))
    empty = WindowTotals(0, 0, (0,) * BUCKETS, None)
    assert await totals(store, "ep_1") == [empty, empty, empty]


async def test_no_window_is_asked_for_no_totals(db: Database) -> None:
    assert (
        await db.run(
            lambda conn: window_totals(conn, "a", "ep_1", now_ms=NOW, windows_ms=()), write=False
        )
        == []
    )


async def test_another_tenant_sees_nothing_of_an_endpoint_it_does_not_own(
    db: Database, store: SqlStore
) -> None:
    await seed(store, ("a", "ep_a"), ("b", "ep_b"))
    await record(
        db,
        failed("ep_a", NOW, error="connection refused", status=None),
        ok("ep_b", NOW, tenant="b"),
        ok("ep_b", NOW, tenant="b"),
    )
    empty = WindowTotals(0, 0, (0,) * BUCKETS, None)
    assert await totals(store, "ep_a", tenant="b") == [empty, empty, empty]
    assert await totals(store, "ep_b", tenant="a") == [empty, empty, empty]
    [mine, *_] = await totals(store, "ep_a", tenant="a")
    assert (mine.attempts, mine.failures) == (1, 1)
    [theirs, *_] = await totals(store, "ep_b", tenant="b")
    assert (theirs.attempts, theirs.failures, theirs.last_error) == (2, 0, None)


async def test_a_window_shows_its_latest_failed_attempt(db: Database, store: SqlStore) -> None:
    await seed(store, ("a", "ep_1"))
    await record(db, failed("ep_1", NOW - 30 * MINUTE, status=503, error="HTTP 503"))
    await record(db, failed("ep_1", NOW - 10 * MINUTE, status=500, error="HTTP 500"))
    # in the same minute, a later batch with an earlier failure keeps the later one
    await record(db, failed("ep_1", NOW - 2 * MINUTE + 5, status=None, error="timeout"))
    await record(db, failed("ep_1", NOW - 2 * MINUTE, status=502, error="HTTP 502"))
    await record(db, ok("ep_1", NOW))
    latest = RecentError("timeout", None, NOW - 2 * MINUTE + 5)
    assert [w.last_error for w in await totals(store, "ep_1")] == [latest, latest, latest]
    # Eight minutes on, the 5-minute window holds successes only: no error to show.
    later = NOW + 8 * MINUTE
    await record(db, ok("ep_1", later))
    five, hour, day = await totals(store, "ep_1", now_ms=later)
    assert five.last_error is None
    assert hour.last_error == day.last_error == latest


async def test_the_store_function_and_the_repository_agree(db: Database, store: SqlStore) -> None:
    await seed(store, ("a", "ep_1"))
    await record(db, ok("ep_1", NOW, 3), failed("ep_1", NOW - 7 * MINUTE, error="HTTP 500"))
    direct = await db.run(
        lambda conn: window_totals(conn, "a", "ep_1", now_ms=NOW, windows_ms=WINDOWS),
        write=False,
    )
    assert direct == await totals(store, "ep_1")


async def test_purging_forgets_the_minutes_before_the_limit_across_endpoints(
    db: Database, store: SqlStore
) -> None:
    await seed(store, ("a", "ep_a"), ("b", "ep_b"))
    minute = minute_of(NOW)
    await record(
        db,
        ok("ep_a", minute - 3 * MINUTE),
        ok("ep_a", minute - 2 * MINUTE),
        ok("ep_a", minute - MINUTE),
        ok("ep_b", minute - 3 * MINUTE, tenant="b"),
        ok("ep_b", minute, tenant="b"),
    )
    assert await db.run(lambda conn: purge_stats(conn, minute - MINUTE)) == 3
    assert await count_rows(db) == 2
    assert await db.run(lambda conn: purge_stats(conn, minute - MINUTE)) == 0
    [_, hour, _] = await totals(store, "ep_a")
    assert hour.attempts == 1


async def test_purging_goes_a_bounded_chunk_at_a_time(db: Database, store: SqlStore) -> None:
    await seed(store, ("a", "ep_1"))
    minute = minute_of(NOW)
    await record(db, *(ok("ep_1", minute - i * MINUTE) for i in range(1, 6)))
    chunks: Sequence[int] = [
        await store.run(lambda uow: uow.stats.purge(minute, 2)) for _ in range(4)
    ]
    assert chunks == [2, 2, 1, 0]
    assert await count_rows(db) == 0
