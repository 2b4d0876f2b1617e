"""The dispatcher's side of the store: leased claims, lease renewal, batched outcomes.

A claim sets ``lease_until``/``lease_owner`` on due rows. A lease that runs out (the worker
died) makes the row claimable again, so a delivery is never lost; only the ones in flight at
a crash may be sent twice. On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets many workers claim
side by side; on SQLite one process owns the file.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    bindparam,
    exists,
    func,
    insert,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from croupier.domain.endpoints import Endpoint
from croupier.domain.events import Event
from croupier.services.ports import Claim, ClaimBatch, Outcome
from croupier.store import tables as t
from croupier.store.engine import Database
from croupier.store.prepared import Prepared
from croupier.store.repositories import endpoint_from_row
from croupier.store.secretbox import SecretBox

#: Written as literals so that SQLite and PostgreSQL match the partial indexes on them.
_OPEN_HEAD = text("head.status IN ('pending', 'failed')")
_FREE = text("deliveries.status IN ('pending', 'failed') AND deliveries.lease_owner IS NULL")
_LEASED = text("deliveries.status IN ('pending', 'failed') AND deliveries.lease_owner IS NOT NULL")
_CHUNK = 500
#: The event columns a claim reads, after ``seq``: ``_claim`` reads them by position.
_EVENT_FIELDS = (
    "id",
    "tenant_id",
    "type",
    "schema_version",
    "data",
    "ordering_key",
    "occurred_at",
    "created_at",
    "trace_id",
)


class SqlDeliveryQueue:
    """Each operation is one transaction on the :class:`Database`."""

    def __init__(self, db: Database, *, box: SecretBox) -> None:
        self.db = db
        self.box = box
        self._pg = db.dialect == "postgresql"

    async def claim(
        self,
        owner: str,
        *,
        now_ms: int,
        limit: int,
        lease_ms: int,
        rooms: Mapping[str, int],
        default_room: int,
    ) -> ClaimBatch:
        return await self.db.run(
            partial(
                _claim,
                self._pg,
                now_ms,
                limit,
                dict(rooms),
                default_room,
                {"until": now_ms + lease_ms, "owner": owner},
            )
        )

    async def endpoints(self, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        return await self.db.run(partial(_endpoints, list(endpoint_ids), self.box), write=False)

    async def record(self, owner: str, outcomes: Sequence[Outcome], now_ms: int) -> None:
        if outcomes:
            await self.db.run(partial(_record, owner, outcomes, now_ms))

    async def record_and_claim(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        now_ms: int,
        *,
        limit: int,
        lease_ms: int,
        rooms: Mapping[str, int],
        default_room: int,
    ) -> ClaimBatch:
        lease = {"until": now_ms + lease_ms, "owner": owner}
        claim = partial(_claim, self._pg, now_ms, limit, dict(rooms), default_room, lease)
        return await self.db.run(partial(_record_then, owner, outcomes, now_ms, claim))

    async def renew(self, owner: str, seqs: Sequence[int], until_ms: int) -> None:
        values = {"lease_until": until_ms}
        await self.db.run(partial(_update_leased, owner, list(seqs), values))

    async def release(self, owner: str, seqs: Sequence[int]) -> None:
        values = {"lease_until": None, "lease_owner": None}
        await self.db.run(partial(_update_leased, owner, list(seqs), values))

    async def release_all(self) -> int:
        return await self.db.run(_release_all)


def _record_then(
    owner: str,
    outcomes: Sequence[Outcome],
    now_ms: int,
    claim: partial[ClaimBatch],
    conn: Connection,
) -> ClaimBatch:
    if outcomes:
        _record(owner, outcomes, now_ms, conn)
    return claim(conn)


@functools.cache
def _expired_statement(pg: bool) -> Any:
    """Leased deliveries whose lease ran out (their worker died), oldest lease first."""
    d = t.deliveries.c
    e = t.endpoints.c
    due = (
        select(d.seq, d.endpoint_id)
        .select_from(t.deliveries.join(t.endpoints, e.id == d.endpoint_id))
        .where(
            _LEASED,
            d.lease_until < bindparam("now", type_=BigInteger),
            e.disabled.is_(False),
            e.deleted_at.is_(None),
            _not_blocked(),
        )
        .order_by(d.lease_until)
        .limit(bindparam("limit", type_=Integer))
    )
    return due.with_for_update(of=t.deliveries, skip_locked=True) if pg else due


@functools.cache
def _backlogs_statement() -> Any:
    """Every live endpoint with the due time of its oldest free due delivery (NULL when it
    has none): one probe of the per-endpoint due index each."""
    d = t.deliveries.c
    e = t.endpoints.c
    oldest = (
        select(func.min(d.due_at))
        .where(_FREE, d.endpoint_id == e.id, d.due_at <= bindparam("now", type_=BigInteger))
        .scalar_subquery()
    )
    return select(e.id, oldest).where(e.disabled.is_(False), e.deleted_at.is_(None))


@functools.cache
def _endpoint_due_statement(pg: bool) -> Any:
    """One endpoint's free due deliveries, oldest due first."""
    d = t.deliveries.c
    due = (
        select(d.seq)
        .where(
            d.endpoint_id == bindparam("endpoint", type_=String),
            _FREE,
            d.due_at <= bindparam("now", type_=BigInteger),
            _not_blocked(),
        )
        .order_by(d.due_at)
        .limit(bindparam("limit", type_=Integer))
    )
    # Another worker skips what this one is looking at, until this claim commits.
    return due.with_for_update(of=t.deliveries, skip_locked=True) if pg else due


def _not_blocked() -> Any:
    """An ordered delivery waits while an earlier one for the same endpoint and key is
    open."""
    d = t.deliveries.c
    head = t.deliveries.alias("head")
    earlier = exists().where(
        head.c.endpoint_id == d.endpoint_id,
        head.c.ordered_key == d.ordered_key,
        head.c.seq < d.seq,
        _OPEN_HEAD,
    )
    return or_(d.ordered_key.is_(None), ~earlier)


@functools.cache
def _lease_statement() -> Any:
    """Lease the chosen deliveries; the endpoint's version comes back with them."""
    d = t.deliveries.c
    e = t.endpoints.c
    version = select(e.version).where(e.id == d.endpoint_id).scalar_subquery()
    return (
        update(t.deliveries)
        .where(d.seq.in_(bindparam("chosen", expanding=True)))
        .values(
            lease_until=bindparam("until", type_=BigInteger),
            lease_owner=bindparam("owner", type_=String),
        )
        .returning(
            d.seq,
            d.id,
            d.endpoint_id,
            d.attempts,
            d.cycle_start,
            d.event_seq,
            d.ordered_key,
            version.label("endpoint_version"),
        )
    )


@functools.cache
def _events_statement() -> Any:
    """The events of a claim's deliveries, each read once however many endpoints it goes
    to. Its columns are read by position in ``_claim``."""
    ev = t.events.c
    return select(ev.seq, *(getattr(ev, name) for name in _EVENT_FIELDS)).where(
        ev.seq.in_(bindparam("seqs", expanding=True))
    )


def _claim(
    pg: bool,
    now_ms: int,
    limit: int,
    rooms: dict[str, int],
    default_room: int,
    lease: dict[str, Any],
    conn: Connection,
) -> ClaimBatch:
    # Only what each endpoint has room for is read: a claim never steps over the backlog of
    # an endpoint that is full, nor over what is in flight.
    chosen: list[int] = []
    # Leases that ran out (their worker died) go first: they are the oldest work.
    for seq, endpoint_id in conn.execute(_expired_statement(pg), {"now": now_ms, "limit": limit}):
        room = rooms.get(endpoint_id, default_room)
        if room > 0:
            rooms[endpoint_id] = room - 1
            chosen.append(seq)
    backlogs = sorted(
        (oldest, endpoint_id)
        for endpoint_id, oldest in conn.execute(_backlogs_statement(), {"now": now_ms})
        if oldest is not None
    )
    # The endpoints whose oldest due delivery is oldest are served first.
    for _, endpoint_id in backlogs:
        want = min(rooms.get(endpoint_id, default_room), limit - len(chosen))
        if want > 0:
            chosen += conn.execute(
                _endpoint_due_statement(pg),
                {"endpoint": endpoint_id, "now": now_ms, "limit": want},
            ).scalars()
    more = len(chosen) >= limit
    if not chosen:
        return ClaimBatch([], more)
    leased = conn.execute(_lease_statement(), {**lease, "chosen": chosen}).all()
    # An event fanned out to many endpoints is read, built and later sent to a sender once:
    # its deliveries share one Event.
    events = {
        r[0]: Event(
            seq=r[0],
            id=r[1],
            tenant_id=r[2],
            type=r[3],
            schema_version=r[4],
            data_json=r[5].encode(),
            ordering_key=r[6],
            occurred_at_ms=r[7],
            created_at_ms=r[8],
            trace_id=r[9],
        )
        for r in conn.execute(_events_statement(), {"seqs": sorted({r[5] for r in leased})})
    }
    # Rows are read by position, in the order of the statement's RETURNING: this runs
    # for every delivery, and reading by name cost as much as the query.
    claims = [
        Claim(
            seq=r[0],
            id=r[1],
            endpoint_id=r[2],
            endpoint_version=r[7],
            attempts=r[3],
            cycle_start=r[4],
            ordered_key=r[6],
            event=events[r[5]],
        )
        for r in leased
    ]
    claims.sort(key=lambda c: c.seq)
    return ClaimBatch(claims, more)


def _endpoints(endpoint_ids: list[str], box: SecretBox, conn: Connection) -> dict[str, Endpoint]:
    rows = conn.execute(select(t.endpoints).where(t.endpoints.c.id.in_(endpoint_ids)))
    return {r.id: endpoint_from_row(r, box) for r in rows}


_ATTEMPT_COLUMNS = (
    "id",
    "delivery_seq",
    "tenant_id",
    "number",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "request_headers",
    "response_headers",
    "response_body",
)
_INSERT_ATTEMPTS = Prepared(
    insert(t.attempts).values({name: bindparam(name) for name in _ATTEMPT_COLUMNS}).inline(),
    _ATTEMPT_COLUMNS,
)
# Only the lease holder may write the outcome: if the lease was lost and someone else sent
# it meanwhile, their result stands and this attempt is only logged.
_SET_OUTCOMES = Prepared(
    update(t.deliveries)
    .where(
        t.deliveries.c.seq == bindparam("b_seq"),
        t.deliveries.c.lease_owner == bindparam("b_owner"),
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        due_at=bindparam("b_due_at"),
        last_status_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        lease_until=null(),
        lease_owner=null(),
        updated_at=bindparam("b_now"),
    ),
    ("b_status", "b_attempts", "b_due_at", "b_code", "b_error", "b_now", "b_seq", "b_owner"),
)


def _record(owner: str, outcomes: Sequence[Outcome], now_ms: int, conn: Connection) -> None:
    dumps = orjson.dumps
    attempts = []
    changes = []
    for o in outcomes:
        result = o.attempt.result
        attempts.append(
            (
                o.attempt.id,
                o.claim.seq,
                o.claim.event.tenant_id,
                o.attempt.number,
                result.started_at_ms,
                result.duration_ms,
                result.status_code,
                result.error,
                dumps(dict(o.attempt.request_headers)).decode(),
                dumps(dict(result.response_headers)).decode(),
                result.response_body,
            )
        )
        changes.append(
            (
                o.decision.status.value,
                o.attempt.number,
                o.decision.next_attempt_at_ms,
                result.status_code,
                result.error,
                now_ms,
                o.claim.seq,
                owner,
            )
        )
    _INSERT_ATTEMPTS.executemany(conn, attempts)
    _SET_OUTCOMES.executemany(conn, changes)
    gone = sorted({o.claim.endpoint_id for o in outcomes if o.decision.disable_endpoint})
    if gone:
        e = t.endpoints.c
        conn.execute(
            update(t.endpoints)
            .where(e.id.in_(gone), e.disabled.is_(False))
            .values(
                disabled=True,
                disabled_reason="the endpoint answered 410 Gone",
                updated_at=now_ms,
                version=e.version + 1,
            )
        )


def _update_leased(owner: str, seqs: list[int], values: dict[str, Any], conn: Connection) -> None:
    d = t.deliveries.c
    for i in range(0, len(seqs), _CHUNK):
        conn.execute(
            update(t.deliveries)
            .where(d.seq.in_(seqs[i : i + _CHUNK]), d.lease_owner == owner)
            .values(values)
        )


def _release_all(conn: Connection) -> int:
    d = t.deliveries.c
    res = conn.execute(
        update(t.deliveries)
        .where(d.lease_owner.is_not(None))
        .values(lease_until=None, lease_owner=None)
    )
    return int(res.rowcount)
