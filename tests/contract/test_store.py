"""The store's contract, run against every backend."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence

import orjson
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from croupier.domain.deliveries import Attempt, AttemptResult, Decision, DeliveryStatus
from croupier.domain.endpoints import Endpoint
from croupier.domain.errors import ConcurrentWrite
from croupier.domain.events import Event, EventType
from croupier.domain.tenants import ApiKey, Tenant
from croupier.services.ports import Claim, DeliveryFilter, NewDelivery, NewEvent, Outcome
from croupier.store.engine import Database
from croupier.store.prepared import Prepared
from croupier.store.queue import SqlDeliveryQueue
from croupier.store.repositories import SqlStore, SqlUnitOfWork
from croupier.store.secretbox import SecretBox
from croupier.store.tables import metadata, tenants

T0 = 1_700_000_000_000


async def test_the_migrations_create_exactly_the_declared_schema(db: Database) -> None:
    diff = await db.run(
        lambda conn: compare_metadata(MigrationContext.configure(conn), metadata), write=False
    )
    assert diff == []


async def seed(store: SqlStore, *tenants: str, endpoints: Sequence[Endpoint] = ()) -> None:
    def add(uow: SqlUnitOfWork) -> None:
        for name in tenants:
            uow.tenants.add(Tenant(name, name, T0))
        for ep in endpoints:
            uow.endpoints.add(ep)

    await store.run(add)


def endpoint(
    tenant: str, ep_id: str, *, ordered: bool = False, types: tuple[str, ...] = ("t",)
) -> Endpoint:
    return Endpoint(
        id=ep_id,
        tenant_id=tenant,
        url="http://127.0.0.1:1/x",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        event_types=types,
        headers={"X-A": "1"},
        retry_schedule=(0, 10),
        ordered=ordered,
        created_at_ms=T0,
        updated_at_ms=T0,
    )


def event(tenant: str, ev_id: str, *, key: str | None = None) -> Event:
    return Event(
        id=ev_id,
        tenant_id=tenant,
        type="t",
        schema_version="1.0.0",
        data_json=b'{"n":1}',
        occurred_at_ms=T0,
        created_at_ms=T0,
        ordering_key=key,
        trace_id="tr",
    )


async def publish(
    store: SqlStore, ev: Event, endpoints: list[tuple[str, str | None]], now: int = T0
) -> Event:
    def write(uow: SqlUnitOfWork) -> Event:
        [seq] = uow.events.add_many([new(ev)])
        stored = dataclasses.replace(ev, seq=seq)
        uow.deliveries.add_many(
            [(stored, NewDelivery(f"dlv_{ev.id}_{ep}", ep, key)) for ep, key in endpoints], now
        )
        return stored

    return await store.run(write)


async def insert(store: SqlStore, *events: NewEvent) -> list[int]:
    return await store.run(lambda uow: uow.events.add_many(events))


async def claim(
    queue: SqlDeliveryQueue,
    owner: str,
    *,
    now_ms: int,
    limit: int,
    lease_ms: int,
    skip: Sequence[str] = (),
) -> list[Claim]:
    """A claim with room for everything except the endpoints in ``skip``."""
    batch = await queue.claim(
        owner,
        now_ms=now_ms,
        limit=limit,
        lease_ms=lease_ms,
        rooms={endpoint: 0 for endpoint in skip},
        default_room=limit,
    )
    return batch.claims


def new(ev: Event, *, key: str | None = None, fingerprint: str = "f") -> NewEvent:
    return NewEvent(event=ev, fingerprint=fingerprint, idempotency_key=key, delivery_count=1)


def outcome_for(claim: Claim, status: DeliveryStatus, due: int | None, code: int = 200) -> Outcome:
    result = AttemptResult(
        started_at_ms=T0,
        duration_ms=2.5,
        status_code=code,
        response_headers={"x": "y"},
        response_body="ok",
    )
    attempt = Attempt(
        f"att_{claim.id}_{claim.attempts}",
        claim.id,
        claim.attempts + 1,
        result,
        {"webhook-id": claim.event.id},
    )
    return Outcome(claim, attempt, Decision(status, due))


async def test_tenants_and_keys_round_trip(store: SqlStore) -> None:
    await seed(store, "a")
    key = ApiKey("key_1", "a", "n", "ck_abc", "h" * 64, True, T0)

    def change(uow: SqlUnitOfWork) -> None:
        uow.keys.add(key)

    await store.run(change)

    def check(uow: SqlUnitOfWork) -> None:
        assert uow.keys.find_by_hash("h" * 64) == key
        assert uow.keys.has_admin()
        assert uow.tenants.get_by_name("a") == Tenant("a", "a", T0)
        assert [t.id for t in uow.tenants.page(limit=10, after=None)] == ["a"]

    await store.run(check, write=False)


async def test_a_unit_of_work_that_raises_keeps_nothing(store: SqlStore) -> None:
    def change(uow: SqlUnitOfWork) -> None:
        uow.tenants.add(Tenant("gone", "gone", T0))
        raise LookupError("changed my mind")

    with pytest.raises(LookupError):
        await store.run(change)
    assert await store.run(lambda uow: uow.tenants.get("gone"), write=False) is None


async def test_endpoints_are_scoped_to_their_tenant(store: SqlStore) -> None:
    await seed(store, "a", "b")

    def change(uow: SqlUnitOfWork) -> None:
        uow.endpoints.add(endpoint("a", "ep_a"))

    await store.run(change)

    def check(uow: SqlUnitOfWork) -> None:
        assert (uow.endpoints.get("a", "ep_a")) == endpoint("a", "ep_a")
        assert uow.endpoints.get("b", "ep_a") is None
        assert uow.endpoints.page("b", limit=10, after=None) == []
        assert _takers(uow, "a", "t") == ["ep_a"]
        assert _takers(uow, "b", "t") == []
        assert _takers(uow, "a", "other") == []

    await store.run(check, write=False)


async def test_deleted_and_disabled_endpoints_get_no_new_deliveries(store: SqlStore) -> None:
    await seed(store, "a")

    def change(uow: SqlUnitOfWork) -> None:
        uow.endpoints.add(endpoint("a", "ep_1"))
        uow.endpoints.add(dataclasses.replace(endpoint("a", "ep_2"), disabled=True))
        uow.endpoints.add(endpoint("a", "ep_3"))
        uow.endpoints.delete("a", "ep_3", T0)

    await store.run(change)

    def check(uow: SqlUnitOfWork) -> None:
        assert _takers(uow, "a", "t") == ["ep_1"]
        assert uow.endpoints.get("a", "ep_3") is None

    await store.run(check, write=False)


async def test_an_event_id_and_an_idempotency_key_are_unique_per_tenant_only(
    store: SqlStore,
) -> None:
    await seed(store, "a", "b")

    seqs = await insert(
        store,
        new(event("a", "e1"), key="k"),
        new(event("a", "e2")),
        new(event("b", "e1"), key="k", fingerprint="g"),
    )
    assert len(set(seqs)) == 3
    assert seqs == sorted(seqs), "seqs come back in the order the events were given"
    for taken in (new(event("a", "e1")), new(event("a", "e3"), key="k")):
        with pytest.raises(ConcurrentWrite):
            await insert(store, taken)

    def check(uow: SqlUnitOfWork) -> None:
        assert uow.events.taken("a", ids=["e1", "e9"], idempotency_keys=["k", "z"]) == (
            {"e1"},
            {"k"},
        )
        assert uow.events.taken("b", ids=["e2"], idempotency_keys=[]) == (set(), set())
        found = uow.events.find("a", event_id=None, idempotency_key="k")
        assert found is not None
        assert found.event.id == "e1"
        assert found.fingerprint == "f"
        other = uow.events.find("b", event_id="e1", idempotency_key=None)
        assert other is not None
        assert other.fingerprint == "g"
        assert uow.events.get("b", "e2") is None

    await store.run(check, write=False)


async def test_events_page_in_publish_order_with_filters(store: SqlStore) -> None:
    await seed(store, "a")

    def change(uow: SqlUnitOfWork) -> None:
        for i in range(5):
            ev = dataclasses.replace(
                event("a", f"e{i}"), created_at_ms=T0 + i, type="t" if i % 2 == 0 else "u"
            )
            uow.events.add_many([new(ev)])

    await store.run(change)

    def check(uow: SqlUnitOfWork) -> None:
        everything = uow.events.page("a", event_type=None, since_ms=None, after_seq=None, limit=10)
        assert [e.id for e in everything] == ["e0", "e1", "e2", "e3", "e4"]
        ts = uow.events.page("a", event_type="t", since_ms=T0 + 1, after_seq=None, limit=10)
        assert [e.id for e in ts] == ["e2", "e4"]
        after = uow.events.page(
            "a", event_type=None, since_ms=None, after_seq=everything[2].seq, limit=1
        )
        assert [e.id for e in after] == ["e3"]
        assert orjson.loads(after[0].data_json) == {"n": 1}

    await store.run(check, write=False)


async def test_a_claim_leases_only_due_deliveries_once(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    await publish(store, event("a", "now"), [("ep_1", None)], now=T0)
    await publish(store, event("a", "later"), [("ep_1", None)], now=T0 + 5_000)
    claims = await claim(queue, "w1", now_ms=T0 + 1, limit=10, lease_ms=1000)
    assert [c.event.id for c in claims] == ["now"]
    assert claims[0].endpoint_version == 1 and claims[0].attempts == 0
    assert await claim(queue, "w2", now_ms=T0 + 2, limit=10, lease_ms=1000) == []
    # the lease runs out: someone else may take it
    again = await claim(queue, "w2", now_ms=T0 + 1002, limit=10, lease_ms=1000)
    assert [c.event.id for c in again] == ["now"]


async def test_a_claim_reads_each_event_once_for_all_its_endpoints(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", ep) for ep in ("ep_1", "ep_2", "ep_3")])
    fanned = dataclasses.replace(event("a", "fan"), ordering_key="k", trace_id="tr")
    await publish(store, fanned, [("ep_1", None), ("ep_2", None), ("ep_3", None)])
    await publish(store, event("a", "solo"), [("ep_2", None)])
    claims = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=1000)
    assert sorted((c.event.id, c.endpoint_id) for c in claims) == [
        ("fan", "ep_1"),
        ("fan", "ep_2"),
        ("fan", "ep_3"),
        ("solo", "ep_2"),
    ]
    fan = [c.event for c in claims if c.event.id == "fan"]
    assert all(e is fan[0] for e in fan), "an event fanned out is one object"
    got = fan[0]
    assert (got.tenant_id, got.type, got.ordering_key, got.trace_id) == ("a", "t", "k", "tr")
    assert orjson.loads(got.data_json) == {"n": 1}
    assert got.seq > 0


async def test_claims_skip_excluded_disabled_and_deleted_endpoints(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", ep) for ep in ("ep_1", "ep_2", "ep_3")])
    await publish(store, event("a", "e"), [("ep_1", None), ("ep_2", None), ("ep_3", None)])

    def change(uow: SqlUnitOfWork) -> None:
        ep2 = uow.endpoints.get("a", "ep_2")
        assert ep2 is not None
        uow.endpoints.update(dataclasses.replace(ep2, disabled=True, version=2))
        uow.endpoints.delete("a", "ep_3", T0)

    await store.run(change)
    none = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=1000, skip=["ep_1"])
    assert none == []
    claims = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=1000)
    assert [c.endpoint_id for c in claims] == ["ep_1"]


async def test_a_claim_leases_no_more_for_an_endpoint_than_its_room(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", ep) for ep in ("ep_1", "ep_2", "ep_3")])
    for i in range(5):
        await publish(store, event("a", f"e{i}"), [("ep_1", None), ("ep_2", None), ("ep_3", None)])
    batch = await queue.claim(
        "w", now_ms=T0, limit=15, lease_ms=1000, rooms={"ep_1": 2, "ep_2": 0}, default_room=4
    )
    taken = Counter(c.endpoint_id for c in batch.claims)
    assert taken == {"ep_1": 2, "ep_3": 4}
    assert not batch.more, "the 10 due rows it could look at were fewer than its limit"
    # What was not taken is still due, for the next claim.
    rest = await claim(queue, "x", now_ms=T0, limit=15, lease_ms=1000)
    assert Counter(c.endpoint_id for c in rest) == {"ep_1": 3, "ep_2": 5, "ep_3": 1}
    more = await queue.claim("y", now_ms=T0 + 5000, limit=3, lease_ms=1, rooms={}, default_room=9)
    assert more.more and len(more.claims) == 3


async def test_an_ordered_key_releases_one_delivery_at_a_time(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_o", ordered=True)])
    for i, key in enumerate(["k1", "k1", "k2", "k1"]):
        await publish(store, event("a", f"e{i}", key=key), [("ep_o", key)])
    first = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=60_000)
    assert sorted(c.event.id for c in first) == ["e0", "e2"]
    head = next(c for c in first if c.event.id == "e0")
    # the head fails and waits 10 s: its key stays blocked, the other key moves on
    await queue.record("w", [outcome_for(head, DeliveryStatus.FAILED, T0 + 10_000, 500)], T0)
    k2 = next(c for c in first if c.event.id == "e2")
    await queue.record("w", [outcome_for(k2, DeliveryStatus.SUCCEEDED, None)], T0)
    assert await claim(queue, "w", now_ms=T0 + 1, limit=10, lease_ms=60_000) == []
    retry = await claim(queue, "w", now_ms=T0 + 10_000, limit=10, lease_ms=60_000)
    assert [c.event.id for c in retry] == ["e0"]
    assert retry[0].attempts == 1
    await queue.record("w", [outcome_for(retry[0], DeliveryStatus.DEAD, None, 500)], T0 + 10_000)
    # a dead head no longer blocks its key
    nxt = await claim(queue, "w", now_ms=T0 + 10_001, limit=10, lease_ms=60_000)
    assert [c.event.id for c in nxt] == ["e1"]


async def test_record_and_claim_records_then_claims_in_one_transaction(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_o", ordered=True), endpoint("a", "ep_2")])
    for i in range(3):
        await publish(store, event("a", f"e{i}", key="k"), [("ep_o", "k")])
    await publish(store, event("a", "x0"), [("ep_2", None)])
    await publish(store, event("a", "x1"), [("ep_2", None)])
    first = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=60_000)
    assert sorted(c.event.id for c in first) == ["e0", "x0", "x1"]
    by_id = {c.event.id: c for c in first}
    # The ordered head succeeds and x0 fails with its retry due at once: in the same
    # transaction the claim sees both outcomes, so the key's successor and x0's retry are
    # claimed; x1, still leased and not recorded, is not; ep_2's room of 1 is respected.
    outcomes = [
        outcome_for(by_id["e0"], DeliveryStatus.SUCCEEDED, None),
        outcome_for(by_id["x0"], DeliveryStatus.FAILED, T0 + 1, 500),
    ]
    batch = await queue.record_and_claim(
        "w",
        outcomes,
        T0 + 1,
        limit=10,
        lease_ms=60_000,
        rooms={"ep_2": 1},
        default_room=10,
    )
    assert sorted((c.event.id, c.attempts) for c in batch.claims) == [("e1", 0), ("x0", 1)]

    def statuses(uow: SqlUnitOfWork) -> dict[str, tuple[str, int]]:
        rows = uow.deliveries.page("a", DeliveryFilter(), before_seq=None, limit=100)
        return {d.event_id: (d.status.value, d.attempts) for d in rows}

    assert await store.run(statuses, write=False) == {
        "e0": ("succeeded", 1),
        "e1": ("pending", 0),
        "e2": ("pending", 0),
        "x0": ("failed", 1),
        "x1": ("pending", 0),
    }
    # Nothing else is free: e2 waits behind e1, x1 and the new claims are leased.
    assert await claim(queue, "w2", now_ms=T0 + 2, limit=10, lease_ms=60_000) == []


async def test_recording_outcomes_updates_deliveries_and_keeps_attempts(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    await publish(store, event("a", "e"), [("ep_1", None)])
    [claimed] = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=1000)
    await queue.record("w", [outcome_for(claimed, DeliveryStatus.SUCCEEDED, None, 204)], T0 + 5)

    def check(uow: SqlUnitOfWork) -> None:
        d = uow.deliveries.get("a", claimed.id)
        assert d is not None
        assert (d.status, d.attempts, d.last_status_code) == (DeliveryStatus.SUCCEEDED, 1, 204)
        [attempt] = uow.deliveries.attempts("a", d.seq)
        assert attempt.result.status_code == 204
        assert attempt.result.response_headers == {"x": "y"}
        assert attempt.request_headers == {"webhook-id": "e"}
        assert uow.deliveries.attempts("b", d.seq) == []

    await store.run(check, write=False)


async def test_an_outcome_from_a_lost_lease_is_logged_but_does_not_overwrite(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    await publish(store, event("a", "e"), [("ep_1", None)])
    [old] = await claim(queue, "w1", now_ms=T0, limit=1, lease_ms=10)
    [new] = await claim(queue, "w2", now_ms=T0 + 11, limit=1, lease_ms=1000)
    await queue.record("w2", [outcome_for(new, DeliveryStatus.SUCCEEDED, None)], T0 + 20)
    late = outcome_for(old, DeliveryStatus.FAILED, T0 + 99, 500)
    late = dataclasses.replace(late, attempt=dataclasses.replace(late.attempt, id="att_late"))
    await queue.record("w1", [late], T0 + 30)

    def check(uow: SqlUnitOfWork) -> None:
        d = uow.deliveries.get("a", old.id)
        assert d is not None and d.status is DeliveryStatus.SUCCEEDED
        assert len(uow.deliveries.attempts("a", d.seq)) == 2

    await store.run(check, write=False)


async def test_leases_can_be_renewed_released_and_cleared(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    for i in range(3):
        await publish(store, event("a", f"e{i}"), [("ep_1", None)])
    claims = await claim(queue, "w", now_ms=T0, limit=10, lease_ms=100)
    assert len(claims) == 3
    await queue.renew("w", [claims[0].seq], T0 + 10_000)
    await queue.release("w", [claims[1].seq])
    back = await claim(queue, "x", now_ms=T0 + 200, limit=10, lease_ms=100)
    assert sorted(c.event.id for c in back) == ["e1", "e2"]
    assert await queue.release_all() == 3
    assert len(await claim(queue, "y", now_ms=T0 + 200, limit=10, lease_ms=100)) == 3


async def test_replay_restarts_matching_deliveries_in_chunks(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    for i in range(5):
        await publish(store, event("a", f"e{i}"), [("ep_1", None)], now=T0 + i)
    claims = await claim(queue, "w", now_ms=T0 + 10, limit=10, lease_ms=100)
    await queue.record(
        "w",
        [
            outcome_for(c, DeliveryStatus.DEAD if i < 4 else DeliveryStatus.SUCCEEDED, None, 500)
            for i, c in enumerate(claims)
        ],
        T0 + 20,
    )
    dead = (DeliveryStatus.DEAD,)

    def check_1(uow: SqlUnitOfWork) -> None:
        assert (
            uow.deliveries.count("a", "ep_1", statuses=dead, since_ms=T0 + 1, until_ms=T0 + 4) == 3
        )
        assert uow.deliveries.count("b", "ep_1", statuses=dead, since_ms=None, until_ms=None) == 0

    await store.run(check_1, write=False)

    def replay(after: int | None, uow: SqlUnitOfWork) -> tuple[int, int | None]:
        return uow.deliveries.replay(
            "a",
            "ep_1",
            statuses=dead,
            since_ms=T0 + 1,
            until_ms=T0 + 4,
            now_ms=T0 + 50,
            after_seq=after,
            limit=2,
        )

    done, after = 0, None
    while True:
        n, after = await store.run(functools.partial(replay, after))
        if n == 0:
            break
        done += n
    assert done == 3

    def check_2(uow: SqlUnitOfWork) -> None:
        pending = uow.deliveries.page(
            "a", DeliveryFilter(status=DeliveryStatus.PENDING), before_seq=None, limit=10
        )
        assert sorted(d.event_id for d in pending) == ["e1", "e2", "e3"]

    await store.run(check_2, write=False)
    again = await claim(queue, "w", now_ms=T0 + 50, limit=10, lease_ms=100)
    assert {c.event.id for c in again} == {"e1", "e2", "e3"}
    # a replay starts a fresh retry cycle: the attempt count goes on, the schedule restarts
    assert {(c.attempts, c.cycle_start) for c in again} == {(1, 1)}


async def test_cancel_open_only_touches_open_deliveries_of_that_endpoint(
    store: SqlStore, queue: SqlDeliveryQueue
) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1"), endpoint("a", "ep_2")])
    await publish(store, event("a", "e0"), [("ep_1", None), ("ep_2", None)])
    [first] = await claim(queue, "w", now_ms=T0, limit=1, lease_ms=100, skip=["ep_2"])
    await queue.record("w", [outcome_for(first, DeliveryStatus.SUCCEEDED, None)], T0)
    await publish(store, event("a", "e1"), [("ep_1", None), ("ep_2", None)])

    def change(uow: SqlUnitOfWork) -> None:
        assert uow.deliveries.cancel_open("a", "ep_1", T0) == 1

    await store.run(change)

    rows = await store.run(
        lambda uow: uow.deliveries.page("a", DeliveryFilter(), before_seq=None, limit=10),
        write=False,
    )
    states = {(d.event_id, d.endpoint_id): d.status for d in rows}
    assert states == {
        ("e0", "ep_1"): DeliveryStatus.SUCCEEDED,
        ("e0", "ep_2"): DeliveryStatus.PENDING,
        ("e1", "ep_1"): DeliveryStatus.CANCELLED,
        ("e1", "ep_2"): DeliveryStatus.PENDING,
    }


async def test_event_types_are_per_tenant(store: SqlStore) -> None:
    await seed(store, "a", "b")
    et = EventType(name="custom.x", schema={"type": "object"}, schema_version="1.2.0")

    def change(uow: SqlUnitOfWork) -> None:
        uow.event_types.upsert("a", et, T0)
        uow.event_types.upsert("a", dataclasses.replace(et, schema_version="1.3.0"), T0)

    await store.run(change)

    def check(uow: SqlUnitOfWork) -> None:
        got = uow.event_types.get("a", "custom.x")
        assert got is not None and got.schema_version == "1.3.0"
        assert uow.event_types.get("b", "custom.x") is None
        assert [t.name for t in uow.event_types.all("a")] == ["custom.x"]

    await store.run(check, write=False)


@pytest.mark.parametrize("limit", [1, 3])
async def test_delivery_pages_are_newest_first(store: SqlStore, limit: int) -> None:
    await seed(store, "a", endpoints=[endpoint("a", "ep_1")])
    for i in range(4):
        await publish(store, event("a", f"e{i}"), [("ep_1", None)])

    def check(uow: SqlUnitOfWork) -> list[str]:
        seen: list[str] = []
        before = None
        while page := uow.deliveries.page("a", DeliveryFilter(), before_seq=before, limit=limit):
            seen += [d.event_id for d in page]
            before = page[-1].seq
        return seen

    assert await store.run(check, write=False) == ["e3", "e2", "e1", "e0"]


async def test_a_prepared_statement_refuses_parameters_named_out_of_order(db: Database) -> None:
    columns = ("id", "name", "created_at")
    statement = sa.insert(tenants).values({c: sa.bindparam(c) for c in columns})
    wrong = Prepared(statement, ("name", "id", "created_at"))
    with pytest.raises(ValueError, match="not in the order"):
        await db.run(lambda conn: wrong.executemany(conn, [("n", "t", T0)]))
    right = Prepared(statement, columns)
    await db.run(lambda conn: right.executemany(conn, [("t1", "one", T0), ("t2", "two", T0)]))
    assert await store_names(db) == ["one", "two"]


async def store_names(db: Database) -> list[str]:
    return await SqlStore(db, box=SecretBox([SecretBox.new_key()])).run(
        lambda uow: [t.name for t in uow.tenants.page(limit=10, after=None)], write=False
    )


def _takers(uow: SqlUnitOfWork, tenant_id: str, event_type: str) -> list[str]:
    """The ids of the tenant's endpoints that take ``event_type``."""
    return [s.id for s, types in uow.endpoints.subscriptions(tenant_id) if event_type in types]
