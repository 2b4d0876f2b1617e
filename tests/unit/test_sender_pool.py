"""How a pool of sender processes routes jobs: no process is started here."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from croupier.dispatch.courier import CourierConfig, Report
from croupier.dispatch.transport import Assignment, SenderPool


class FakePart:
    """Stands in for one ProcessTransport: records what it is given."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.jobs: list[tuple[int, str]] = []
        self.on_reports: Any = None

    async def open(self, on_reports: Any) -> None:
        self.on_reports = on_reports

    def submit(self, batch: Sequence[Assignment]) -> None:
        self.jobs += [(claim.seq, endpoint.id) for claim, endpoint in batch]

    def report(self, *seqs: int) -> None:
        self.on_reports([Report(seq, None, {}) for seq in seqs])


def job(seq: int, endpoint_id: str) -> Assignment:
    return cast(Assignment, (SimpleNamespace(seq=seq), SimpleNamespace(id=endpoint_id)))


async def pool_of(*parts: FakePart) -> tuple[SenderPool, list[list[Report]]]:
    pool = SenderPool(CourierConfig(max_in_flight=64), processes=len(parts))
    assert [p._config.max_in_flight for p in pool._parts] == [64 // len(parts)] * len(parts)
    pool._parts = cast(Any, list(parts))
    seen: list[list[Report]] = []
    await pool.open(lambda reports: seen.append(list(reports)))
    return pool, seen


async def test_an_endpoint_stays_in_one_child_while_it_has_jobs_outstanding() -> None:
    a, b = FakePart(101), FakePart(102)
    pool, seen = await pool_of(a, b)
    pool.submit([job(1, "ep_x"), job(2, "ep_x"), job(3, "ep_y")])
    assert a.jobs == [(1, "ep_x"), (2, "ep_x")] and b.jobs == [(3, "ep_y")]
    # b is now the less busy, but ep_x still has jobs in a: they stay together.
    a.report(1)
    pool.submit([job(4, "ep_x")])
    assert a.jobs[-1] == (4, "ep_x")
    assert [r.seq for batch in seen for r in batch] == [1]


async def test_an_endpoint_with_nothing_outstanding_goes_to_the_least_busy_child() -> None:
    a, b = FakePart(101), FakePart(102)
    pool, _ = await pool_of(a, b)
    pool.submit([job(1, "ep_x"), job(2, "ep_y"), job(3, "ep_y"), job(4, "ep_y")])
    a.report(1)
    b.report(2)
    # ep_x has nothing outstanding; a has 0 jobs, b has 2: ep_x and a new endpoint go to a.
    pool.submit([job(5, "ep_x"), job(6, "ep_z")])
    assert a.jobs[-2:] == [(5, "ep_x"), (6, "ep_z")]


async def test_a_child_being_replaced_gets_no_new_endpoints() -> None:
    dead, alive = FakePart(None), FakePart(102)
    pool, _ = await pool_of(dead, alive)
    pool.submit([job(1, "ep_x"), job(2, "ep_y")])
    assert dead.jobs == [] and alive.jobs == [(1, "ep_x"), (2, "ep_y")]
    assert pool.pids == [102]


async def test_with_no_child_running_jobs_still_go_somewhere_to_wait() -> None:
    a, b = FakePart(None), FakePart(None)
    pool, _ = await pool_of(a, b)
    pool.submit([job(1, "ep_x")])
    assert a.jobs + b.jobs == [(1, "ep_x")]


def test_a_pool_needs_a_process_and_never_more_than_its_slots() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SenderPool(CourierConfig(), processes=0)
    assert SenderPool(CourierConfig(max_in_flight=2), processes=4).processes == 2
