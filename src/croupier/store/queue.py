"""The dispatcher's side of the store: leased claims, lease renewal, batched outcomes.

A claim sets ``lease_until``/``lease_owner`` on due rows. A lease that runs out (the worker
died) makes the row claimable again, so a delivery is never lost; only the ones in flight at
a crash may be sent twice. On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets many workers claim
side by side; on SQLite one process owns the file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    and_,
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

from croupier.catalog import builtin_event_types
from croupier.domain.endpoints import Endpoint
from croupier.domain.events import Event
from croupier.domain.health import Breaker, BreakerState, admits, next_token_ms, tokens_now
from croupier.services.outbox import append_events
from croupier.services.ports import Claim, ClaimBatch, Outcome
from croupier.store import tables as t
from croupier.store.engine import Database
from croupier.store.health import AUTO_DISABLE_AFTER_MS, update_health
from croupier.store.prepared import Prepared
from croupier.store.repositories import SqlUnitOfWork, endpoint_from_row
from croupier.store.secretbox import SecretBox
from croupier.store.stats import AttemptStat, record_attempt_stats

#: Written as literals so that SQLite and PostgreSQL match the partial indexes on them.
_OPEN_HEAD = text("head.status IN ('pending', 'failed')")
_FREE = text("deliveries.status IN ('pending', 'failed') AND deliveries.lease_owner IS NULL")
_LEASED = text("deliveries.status IN ('pending', 'failed') AND deliveries.lease_owner IS NOT NULL")
_CHUNK = 500
#: How soon to claim again for an endpoint whose controls another transaction held.
_LOCKED_RETRY_MS = 5
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

    def __init__(
        self,
        db: Database,
        *,
        box: SecretBox,
        auto_disable_after_ms: int = AUTO_DISABLE_AFTER_MS,
    ) -> None:
        self.db = db
        self.box = box
        self.auto_disable_after_ms = auto_disable_after_ms
        self._pg = db.dialect == "postgresql"

    def _record(
        self, owner: str, outcomes: Sequence[Outcome], now_ms: int, conn: Connection
    ) -> frozenset[str]:
        _record(owner, outcomes, now_ms, conn)
        record_attempt_stats(
            conn,
            [
                AttemptStat(
                    o.claim.endpoint_id,
                    o.claim.event.tenant_id,
                    o.attempt.result.started_at_ms,
                    o.attempt.result.duration_ms,
                    o.attempt.result.succeeded,
                    o.attempt.result.status_code,
                    o.attempt.result.error,
                )
                for o in outcomes
            ],
        )
        health = update_health(self._pg, outcomes, now_ms, self.auto_disable_after_ms, conn)
        if health.notices:
            append_events(SqlUnitOfWork(conn, self.box), health.notices, now_ms)
        return health.stopped

    async def claim(
        self,
        owner: str,
        *,
        now_ms: int,
        limit: int,
        lease_ms: int,
        rooms: Mapping[str, int],
        default_room: int,
        retry_room: int | None = None,
        paused: bool = False,
        default_max_in_flight: int = 16,
    ) -> ClaimBatch:
        return await self.db.run(
            partial(
                _claim,
                _ClaimAsk(
                    self._pg,
                    now_ms,
                    limit,
                    dict(rooms),
                    default_room,
                    retry_room,
                    paused,
                    lease_ms,
                    {"until": now_ms + lease_ms, "owner": owner},
                    default_max_in_flight,
                ),
            )
        )

    async def endpoints(self, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        return await self.db.run(partial(_endpoints, list(endpoint_ids), self.box), write=False)

    async def record(self, owner: str, outcomes: Sequence[Outcome], now_ms: int) -> frozenset[str]:
        if not outcomes:
            return frozenset()
        return await self.db.run(partial(self._record, owner, outcomes, now_ms))

    async def due_backlog(self, now_ms: int, *, at_most: int) -> int:
        return await self.db.run(partial(_due_backlog, now_ms, at_most), write=False)

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
        retry_room: int | None = None,
        paused: bool = False,
        default_max_in_flight: int = 16,
    ) -> ClaimBatch:
        lease = {"until": now_ms + lease_ms, "owner": owner}
        ask = _ClaimAsk(
            self._pg,
            now_ms,
            limit,
            dict(rooms),
            default_room,
            retry_room,
            paused,
            lease_ms,
            lease,
            default_max_in_flight,
        )

        def work(conn: Connection) -> ClaimBatch:
            stopped = self._record(owner, outcomes, now_ms, conn) if outcomes else frozenset()
            claimed = _claim(ask, conn)
            return dataclasses.replace(claimed, stopped=stopped) if stopped else claimed

        return await self.db.run(work)

    async def renew(self, owner: str, seqs: Sequence[int], until_ms: int) -> None:
        values = {"lease_until": until_ms}
        await self.db.run(partial(_update_leased, owner, list(seqs), values))

    async def release(self, owner: str, seqs: Sequence[int]) -> None:
        values = {"lease_until": None, "lease_owner": None}
        await self.db.run(partial(_update_leased, owner, list(seqs), values))

    async def release_all(self) -> int:
        return await self.db.run(_release_all)


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
            # Not while its breaker keeps deliveries waiting.
            or_(
                e.breaker_state == BreakerState.CLOSED.value,
                e.breaker_until <= bindparam("now", type_=BigInteger),
            ),
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
    return select(
        e.id,
        oldest.label("oldest"),
        e.breaker_state,
        e.breaker_until,
        e.rate_limit_per_s,
        e.rate_tokens,
        e.rate_at,
        e.max_in_flight,
    ).where(e.disabled.is_(False), e.deleted_at.is_(None))


@functools.cache
def _endpoint_due_statement(pg: bool, retries: bool, paused: bool) -> Any:
    """One endpoint's free due deliveries, oldest due first: first attempts and money
    events, or (``retries``) retries of other events; without non-core types if ``paused``."""
    d = t.deliveries.c
    money = d.event_type.like("wallet.%")
    first = d.attempts == d.cycle_start
    kind = and_(~first, ~money) if retries else or_(first, money)
    due = (
        select(d.seq)
        .where(
            d.endpoint_id == bindparam("endpoint", type_=String),
            _FREE,
            d.due_at <= bindparam("now", type_=BigInteger),
            kind,
            *([_core()] if paused else []),
            _not_blocked(),
        )
        .order_by(d.due_at)
        .limit(bindparam("limit", type_=Integer))
    )
    # Another worker skips what this one is looking at, until this claim commits.
    return due.with_for_update(of=t.deliveries, skip_locked=True) if pg else due


def _core() -> Any:
    """The delivery's event type is core: not a shipped non-core type, nor one of the
    tenant's own marked non-core."""
    d = t.deliveries.c
    et = t.event_types.c
    shipped = sorted(x.name for x in builtin_event_types() if not x.core)
    own = exists().where(et.tenant_id == d.tenant_id, et.name == d.event_type, et.core.is_(False))
    return and_(d.event_type.not_in(shipped), ~own) if shipped else ~own


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


class _ClaimAsk(NamedTuple):
    pg: bool
    now_ms: int
    limit: int
    rooms: dict[str, int]
    default_room: int
    #: Retries of other than money events this claim may take; None: no cap.
    retry_room: int | None
    #: Overload: leave out the events of non-core types.
    paused: bool
    #: A half-open breaker's probe has this long before another may go.
    lease_ms: int
    lease: dict[str, Any]
    #: The concurrency ``default_room`` goes with; an endpoint with its own gets its share.
    default_max_in_flight: int


class _Gate(NamedTuple):
    """What an endpoint's controls let a claim take now."""

    #: None: no limit beyond the room.
    allows: int | None
    probe: bool
    tokens: float | None


def _claim(ask: _ClaimAsk, conn: Connection) -> ClaimBatch:
    # Only what each endpoint has room for is read: a claim never steps over the backlog of
    # an endpoint that is full, nor over what is in flight.
    now_ms, limit, rooms, default_room = ask.now_ms, ask.limit, ask.rooms, ask.default_room
    chosen: list[int] = []
    wake_at: int | None = None
    # Leases that ran out (their worker died) go first: they are the oldest work.
    for seq, endpoint_id in conn.execute(
        _expired_statement(ask.pg), {"now": now_ms, "limit": limit}
    ):
        room = rooms.get(endpoint_id, default_room)
        if room > 0:
            rooms[endpoint_id] = room - 1
            chosen.append(seq)
    backlogs = sorted(
        (row.oldest, row.id, row)
        for row in conn.execute(_backlogs_statement(), {"now": now_ms})
        if row.oldest is not None
    )
    # What each endpoint may take: its room, within its breaker and rate limit.
    wants: dict[str, int] = {}
    gates: dict[str, _Gate] = {}
    rates: dict[str, float] = {}
    for _, endpoint_id, row in backlogs:
        gate = _gate(ask, row, conn)
        if gate is None:
            # Another worker holds its controls (claiming, or recording its outcomes) for
            # the moment a transaction takes: look again right after.
            when = now_ms + _LOCKED_RETRY_MS
            wake_at = when if wake_at is None else min(wake_at, when)
            continue
        want = rooms.get(endpoint_id, default_room)
        if endpoint_id not in rooms and row.max_in_flight is not None:
            # Not held yet, with a concurrency of its own: the room that goes with it.
            want = row.max_in_flight * default_room // ask.default_max_in_flight
        if gate.allows is not None:
            want = min(want, gate.allows)
        if want <= 0:
            reopens = _reopens_at(row, gate, now_ms) if gate.allows == 0 else None
            if reopens is not None:
                wake_at = reopens if wake_at is None else min(wake_at, reopens)
            continue
        wants[endpoint_id] = want
        gates[endpoint_id] = gate
        rates[endpoint_id] = row.rate_limit_per_s
    taken: dict[str, int] = {}
    # First attempts and money events first, the endpoints whose oldest due delivery is
    # oldest first; then retries of the rest, within the cap on retries.
    retry_room = ask.retry_room
    for retries in (False, True):
        for endpoint_id, want in wants.items():
            want = min(want - taken.get(endpoint_id, 0), limit - len(chosen))
            if retries and retry_room is not None:
                want = min(want, retry_room)
            if want <= 0:
                continue
            got = list(
                conn.execute(
                    _endpoint_due_statement(ask.pg, retries, ask.paused),
                    {"endpoint": endpoint_id, "now": now_ms, "limit": want},
                ).scalars()
            )
            if got:
                chosen += got
                taken[endpoint_id] = taken.get(endpoint_id, 0) + len(got)
                if retries and retry_room is not None:
                    retry_room -= len(got)
    for endpoint_id, n in taken.items():
        gate = gates[endpoint_id]
        if gate.probe:
            conn.execute(_probe_statement(), _probe_values(endpoint_id, now_ms, ask.lease_ms))
        if gate.tokens is not None:
            conn.execute(
                _tokens_statement(),
                {"endpoint": endpoint_id, "tokens": gate.tokens - n, "at": now_ms},
            )
            if n >= wants[endpoint_id]:
                # It used what it had: come back when the next token is in.
                when = next_token_ms(rates[endpoint_id], gate.tokens - n, now_ms)
                wake_at = when if wake_at is None else min(wake_at, when)
    more = len(chosen) >= limit
    if not chosen:
        return ClaimBatch([], more, wake_at)
    leased = conn.execute(_lease_statement(), {**ask.lease, "chosen": chosen}).all()
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
    return ClaimBatch(claims, more, wake_at)


def _gate(ask: _ClaimAsk, row: Any, conn: Connection) -> _Gate | None:
    """What the endpoint's breaker and rate limit allow; None when another worker holds
    its controls (PostgreSQL)."""
    breaker = Breaker(BreakerState(row.breaker_state), row.breaker_until)
    allows = admits(breaker, ask.now_ms)
    if allows == 0 or (allows is None and row.rate_limit_per_s is None):
        return _Gate(allows, False, None)
    tokens_row = row
    if ask.pg:
        # Read again under a lock: the bucket and the probe are shared by every worker.
        tokens_row = conn.execute(_controls_statement(), {"endpoint": row.id}).one_or_none()
        if tokens_row is None:
            return None
        breaker = Breaker(BreakerState(tokens_row.breaker_state), tokens_row.breaker_until)
        allows = admits(breaker, ask.now_ms)
        if allows == 0:
            return _Gate(0, False, None)
    probe = allows == 1
    tokens = None
    if row.rate_limit_per_s is not None:
        tokens = tokens_now(
            row.rate_limit_per_s, tokens_row.rate_tokens, tokens_row.rate_at, ask.now_ms
        )
        whole = int(tokens)
        allows = whole if allows is None else min(allows, whole)
    return _Gate(allows, probe, tokens)


def _reopens_at(row: Any, gate: _Gate, now_ms: int) -> int | None:
    """When an endpoint that may take nothing now may take something."""
    if gate.tokens is not None and gate.tokens < 1:
        return next_token_ms(row.rate_limit_per_s, gate.tokens, now_ms)
    until: int | None = row.breaker_until
    return until if until is not None and until > now_ms else None


def _probe_values(endpoint_id: str, now_ms: int, turn_ms: int) -> dict[str, Any]:
    return {
        "endpoint": endpoint_id,
        "state": BreakerState.HALF_OPEN.value,
        "until": now_ms + turn_ms,
    }


@functools.cache
def _probe_statement() -> Any:
    e = t.endpoints.c
    return (
        update(t.endpoints)
        .where(e.id == bindparam("endpoint", type_=String))
        .values(
            breaker_state=bindparam("state", type_=String),
            breaker_until=bindparam("until", type_=BigInteger),
        )
    )


@functools.cache
def _tokens_statement() -> Any:
    e = t.endpoints.c
    return (
        update(t.endpoints)
        .where(e.id == bindparam("endpoint", type_=String))
        .values(
            rate_tokens=bindparam("tokens", type_=Float),
            rate_at=bindparam("at", type_=BigInteger),
        )
    )


@functools.cache
def _controls_statement() -> Any:
    e = t.endpoints.c
    return (
        select(e.breaker_state, e.breaker_until, e.rate_tokens, e.rate_at)
        .where(e.id == bindparam("endpoint", type_=String))
        .with_for_update(skip_locked=True, key_share=True)
    )


def _due_backlog(now_ms: int, at_most: int, conn: Connection) -> int:
    params = {"now": now_ms, "limit": at_most}
    return int(conn.execute(_due_count_statement(), params).scalar_one())


@functools.cache
def _due_count_statement() -> Any:
    """Read from the index of free deliveries alone (it holds ``due_at``)."""
    d = t.deliveries.c
    due = (
        select(d.seq)
        .where(_FREE, d.due_at <= bindparam("now", type_=BigInteger))
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )
    return select(func.count()).select_from(due)


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
    # In seq order, the order a renewal's and a release's UPDATE ... WHERE seq IN (...) lock
    # the same rows: on PostgreSQL two of them side by side then queue, never deadlock.
    changes.sort(key=lambda change: change[6])
    _SET_OUTCOMES.executemany(conn, changes)


def _update_leased(owner: str, seqs: list[int], values: dict[str, Any], conn: Connection) -> None:
    d = t.deliveries.c
    seqs = sorted(seqs)
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
