"""Duplicate detection: memory, SQLite and Redis, with injected clocks and real concurrency."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from croupier.receiver import Dedupe, MemoryDedupe, RedisDedupe, SQLiteDedupe
from tests.receiver.support import EVENT_ID, REDIS_URL, Clock


def claim_concurrently(claim: Callable[[str], bool], event_id: str, threads: int = 8) -> list[bool]:
    """``threads`` threads released together, each claiming ``event_id`` once."""
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        outcome = claim(event_id)
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


@pytest.fixture
def sqlite_dedupe(tmp_path: Path, clock: Clock) -> Iterator[SQLiteDedupe]:
    with SQLiteDedupe(tmp_path / "seen.db", ttl_s=3600, now=clock) as dedupe:
        yield dedupe


def test_every_store_satisfies_the_dedupe_protocol(
    sqlite_dedupe: SQLiteDedupe, redis_client: redis.Redis, redis_prefix: str
) -> None:
    stores: list[Dedupe] = [
        MemoryDedupe(),
        sqlite_dedupe,
        RedisDedupe(redis_client, prefix=redis_prefix),
    ]
    for store in stores:
        assert isinstance(store, Dedupe)
        assert store.claim(EVENT_ID) is True
        assert store.claim(EVENT_ID) is False
        assert store.claim("evt_other") is True


# memory --------------------------------------------------------------------------------------


def test_memory_forgets_an_id_once_its_ttl_has_passed(clock: Clock) -> None:
    dedupe = MemoryDedupe(ttl_s=60, now=clock)
    assert dedupe.claim(EVENT_ID)
    clock.advance(59)
    assert not dedupe.claim(EVENT_ID)
    clock.advance(1)
    assert dedupe.claim(EVENT_ID)
    assert not dedupe.claim(EVENT_ID)


def test_memory_release_makes_the_id_claimable_again(clock: Clock) -> None:
    dedupe = MemoryDedupe(now=clock)
    assert dedupe.claim(EVENT_ID)
    dedupe.release(EVENT_ID)
    assert dedupe.claim(EVENT_ID)
    dedupe.release("evt_never_seen")


def test_memory_keeps_at_most_max_entries_and_evicts_the_oldest(clock: Clock) -> None:
    dedupe = MemoryDedupe(max_entries=3, now=clock)
    for i in range(4):
        assert dedupe.claim(f"evt_{i}")
    assert len(dedupe) == 3
    assert dedupe.claim("evt_0")  # evicted, so new again
    assert not dedupe.claim("evt_3")


def test_memory_purges_expired_entries_as_time_passes(clock: Clock) -> None:
    dedupe = MemoryDedupe(ttl_s=10, now=clock)
    for i in range(5):
        dedupe.claim(f"evt_{i}")
        clock.advance(1)
    clock.advance(8)  # now 13: the claims at 0..3 expired, the one at 4 expires at 14
    assert len(dedupe) == 1


def test_eight_threads_claiming_one_id_in_memory_get_exactly_one_true() -> None:
    dedupe = MemoryDedupe()
    for round_ in range(20):
        assert sorted(claim_concurrently(dedupe.claim, f"evt_{round_}")) == [False] * 7 + [True]


def test_memory_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        MemoryDedupe(ttl_s=0)
    with pytest.raises(ValueError, match="max_entries"):
        MemoryDedupe(max_entries=0)


# SQLite --------------------------------------------------------------------------------------


def test_sqlite_remembers_ids_across_a_reopen_of_the_file(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "seen.db"
    with SQLiteDedupe(path, now=clock) as first:
        assert first.claim(EVENT_ID)
    with SQLiteDedupe(path, now=clock) as reopened:
        assert not reopened.claim(EVENT_ID)
        assert reopened.claim("evt_new")


def test_sqlite_forgets_an_id_once_its_ttl_has_passed_even_after_a_restart(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "seen.db"
    with SQLiteDedupe(path, ttl_s=3600, now=clock) as dedupe:
        assert dedupe.claim(EVENT_ID)
        clock.advance(3599)
        assert not dedupe.claim(EVENT_ID)
    clock.advance(1)
    with SQLiteDedupe(path, ttl_s=3600, now=clock) as dedupe:
        assert dedupe.claim(EVENT_ID)
        assert not dedupe.claim(EVENT_ID)


def test_sqlite_release_makes_the_id_claimable_again(sqlite_dedupe: SQLiteDedupe) -> None:
    assert sqlite_dedupe.claim(EVENT_ID)
    sqlite_dedupe.release(EVENT_ID)
    assert sqlite_dedupe.claim(EVENT_ID)


def test_sqlite_purge_deletes_only_expired_rows(sqlite_dedupe: SQLiteDedupe, clock: Clock) -> None:
    sqlite_dedupe.claim("evt_old")
    clock.advance(1800)
    sqlite_dedupe.claim("evt_young")
    clock.advance(1800)
    assert sqlite_dedupe.purge() == 1
    assert not sqlite_dedupe.claim("evt_young")


def test_sqlite_purges_expired_rows_now_and_then_while_claiming(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "seen.db"
    with SQLiteDedupe(path, ttl_s=1, now=clock) as dedupe:
        for i in range(SQLiteDedupe.PURGE_EVERY):
            clock.advance(1)
            dedupe.claim(f"evt_{i}")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM croupier_dedupe").fetchone()
    assert rows == 1  # only the last claim, which has not expired yet


def test_eight_threads_sharing_one_sqlite_dedupe_get_exactly_one_true(
    sqlite_dedupe: SQLiteDedupe,
) -> None:
    for round_ in range(10):
        results = claim_concurrently(sqlite_dedupe.claim, f"evt_{round_}")
        assert sorted(results) == [False] * 7 + [True]


def test_eight_connections_to_one_sqlite_file_get_exactly_one_true(
    tmp_path: Path, clock: Clock
) -> None:
    # As eight worker processes would: each its own connection, one shared file.
    path = tmp_path / "seen.db"
    stores = [SQLiteDedupe(path, now=clock) for _ in range(8)]
    try:
        by_thread = iter(stores)
        local = threading.local()
        lock = threading.Lock()

        def claim(event_id: str) -> bool:
            if not hasattr(local, "store"):
                with lock:
                    local.store = next(by_thread)
            store: SQLiteDedupe = local.store
            return store.claim(event_id)

        assert sorted(claim_concurrently(claim, EVENT_ID)) == [False] * 7 + [True]
    finally:
        for store in stores:
            store.close()


def test_sqlite_refuses_a_table_name_that_is_not_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identifier"):
        SQLiteDedupe(tmp_path / "seen.db", table="seen; DROP TABLE x")


# Redis ---------------------------------------------------------------------------------------


def test_redis_claims_with_set_nx_and_the_configured_ttl(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    dedupe = RedisDedupe(redis_client, ttl_s=3600, prefix=redis_prefix)
    assert dedupe.claim(EVENT_ID)
    assert not dedupe.claim(EVENT_ID)
    assert redis_client.get(redis_prefix + EVENT_ID) == b"1"
    assert 3590 <= redis_client.ttl(redis_prefix + EVENT_ID) <= 3600
    assert dedupe.key(EVENT_ID) == redis_prefix + EVENT_ID


def test_redis_defaults_to_a_seven_day_ttl(redis_client: redis.Redis, redis_prefix: str) -> None:
    RedisDedupe(redis_client, prefix=redis_prefix).claim(EVENT_ID)
    assert 7 * 86400 - 10 <= redis_client.ttl(redis_prefix + EVENT_ID) <= 7 * 86400


def test_redis_release_makes_the_id_claimable_again(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    dedupe = RedisDedupe(redis_client, prefix=redis_prefix)
    assert dedupe.claim(EVENT_ID)
    dedupe.release(EVENT_ID)
    assert redis_client.exists(redis_prefix + EVENT_ID) == 0
    assert dedupe.claim(EVENT_ID)


def test_redis_from_a_url_owns_and_closes_its_client(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    with RedisDedupe(REDIS_URL, ttl_s=60, prefix=redis_prefix) as dedupe:
        assert dedupe.claim(EVENT_ID)
        assert not dedupe.claim(EVENT_ID)
    assert 50 <= redis_client.ttl(redis_prefix + EVENT_ID) <= 60


def test_redis_leaves_a_given_client_open(redis_client: redis.Redis, redis_prefix: str) -> None:
    with RedisDedupe(redis_client, prefix=redis_prefix) as dedupe:
        dedupe.claim(EVENT_ID)
    assert redis_client.ping()


def test_eight_threads_claiming_one_id_in_redis_get_exactly_one_true(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    dedupe = RedisDedupe(redis_client, prefix=redis_prefix)
    assert sorted(claim_concurrently(dedupe.claim, EVENT_ID)) == [False] * 7 + [True]


def test_redis_refuses_an_asyncio_client_instead_of_claiming_forever() -> None:
    class AsyncLike:
        def set(self, *args: object, **kwargs: object) -> Coroutine[Any, Any, bool]:
            async def answer() -> bool:
                return True

            return answer()

    with pytest.raises(TypeError, match="synchronous redis client"):
        RedisDedupe(AsyncLike()).claim(EVENT_ID)  # type: ignore[arg-type]


def test_redis_refuses_a_ttl_that_is_not_whole_seconds(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        RedisDedupe(redis_client, ttl_s=0)
    with pytest.raises(ValueError, match="ttl_s"):
        RedisDedupe(redis_client, ttl_s=1.5)  # type: ignore[arg-type]
