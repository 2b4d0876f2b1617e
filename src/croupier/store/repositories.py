"""The repositories and the unit of work, on SQLAlchemy Core. Every query names its tenant."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import orjson
from sqlalchemy import Row, and_, bindparam, func, insert, literal_column, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from croupier.domain.deliveries import (
    OPEN_STATUSES,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryStatus,
)
from croupier.domain.endpoints import Endpoint
from croupier.domain.errors import ConcurrentWrite
from croupier.domain.events import Event, EventType
from croupier.domain.health import DEFAULT_BREAKER, Breaker, BreakerSettings, BreakerState
from croupier.domain.ids import new_id
from croupier.domain.tenants import ApiKey, Tenant
from croupier.services.ports import (
    DeliveryFilter,
    NewDelivery,
    NewEvent,
    StoredEvent,
    Subscriber,
)
from croupier.store import tables as t
from croupier.store.engine import Database
from croupier.store.prepared import Prepared, Statement
from croupier.store.secretbox import SecretBox
from croupier.store.stats import SqlStatsRepo
from croupier.store.wallet import SqlWalletRepo

T = TypeVar("T")


class SqlStore:
    """The store: runs units of work on a :class:`Database`."""

    def __init__(self, db: Database, *, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def run(
        self, work: Callable[[SqlUnitOfWork], T], *, write: bool = True, urgent: bool = False
    ) -> T:
        """``work`` in one transaction, which commits when it returns. A write that collides
        with a concurrent one (a unique key taken meanwhile) surfaces as a retryable
        ``ConcurrentWrite``, never as a driver error. ``urgent`` writes (money) go before
        the others where writes queue."""
        try:
            return await self.db.run(
                partial(_in_unit_of_work, work, self.box), write=write, urgent=urgent
            )
        except IntegrityError as exc:
            raise ConcurrentWrite("a concurrent request changed the same data; retry") from exc


def _in_unit_of_work(work: Callable[[SqlUnitOfWork], T], box: SecretBox, conn: Connection) -> T:
    return work(SqlUnitOfWork(conn, box))


class SqlUnitOfWork:
    """Every repository, on one connection inside one transaction."""

    def __init__(self, conn: Connection, box: SecretBox) -> None:
        self.conn = conn
        self.tenants = SqlTenantRepo(conn)
        self.keys = SqlKeyRepo(conn)
        self.event_types = SqlEventTypeRepo(conn)
        self.endpoints = SqlEndpointRepo(conn, box)
        self.events = SqlEventRepo(conn)
        self.deliveries = SqlDeliveryRepo(conn)
        self.wallet = SqlWalletRepo(conn)
        self.stats = SqlStatsRepo(conn)


class SqlTenantRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, tenant: Tenant) -> None:
        self.conn.execute(
            insert(t.tenants).values(
                id=tenant.id, name=tenant.name, created_at=tenant.created_at_ms
            )
        )

    def get(self, tenant_id: str) -> Tenant | None:
        row = (self.conn.execute(select(t.tenants).where(t.tenants.c.id == tenant_id))).first()
        return _tenant(row) if row else None

    def get_by_name(self, name: str) -> Tenant | None:
        row = (self.conn.execute(select(t.tenants).where(t.tenants.c.name == name))).first()
        return _tenant(row) if row else None

    def page(self, *, limit: int, after: str | None) -> list[Tenant]:
        q = select(t.tenants).order_by(t.tenants.c.id).limit(limit)
        if after is not None:
            q = q.where(t.tenants.c.id > after)
        return [_tenant(r) for r in self.conn.execute(q)]


class SqlKeyRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, key: ApiKey) -> None:
        self.conn.execute(
            insert(t.api_keys).values(
                id=key.id,
                tenant_id=key.tenant_id,
                name=key.name,
                prefix=key.prefix,
                key_hash=key.key_hash,
                is_admin=key.is_admin,
                created_at=key.created_at_ms,
                revoked_at=key.revoked_at_ms,
            )
        )

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        row = (
            self.conn.execute(select(t.api_keys).where(t.api_keys.c.key_hash == key_hash))
        ).first()
        if row is None:
            return None
        return ApiKey(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            prefix=row.prefix,
            key_hash=row.key_hash,
            is_admin=row.is_admin,
            created_at_ms=row.created_at,
            revoked_at_ms=row.revoked_at,
        )

    def has_admin(self) -> bool:
        q = select(t.api_keys.c.id).where(
            t.api_keys.c.is_admin.is_(True), t.api_keys.c.revoked_at.is_(None)
        )
        return (self.conn.execute(q.limit(1))).first() is not None


class SqlEventTypeRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def upsert(self, tenant_id: str, event_type: EventType, now_ms: int) -> None:
        values = {
            "schema": orjson.dumps(event_type.schema).decode(),
            "schema_version": event_type.schema_version,
            "description": event_type.description,
            "core": event_type.core,
            "updated_at": now_ms,
        }
        res = self.conn.execute(
            update(t.event_types)
            .where(t.event_types.c.tenant_id == tenant_id, t.event_types.c.name == event_type.name)
            .values(**values)
        )
        if res.rowcount == 0:
            self.conn.execute(
                insert(t.event_types).values(
                    tenant_id=tenant_id, name=event_type.name, created_at=now_ms, **values
                )
            )

    def get(self, tenant_id: str, name: str) -> EventType | None:
        row = (
            self.conn.execute(
                select(t.event_types).where(
                    t.event_types.c.tenant_id == tenant_id, t.event_types.c.name == name
                )
            )
        ).first()
        return _event_type(row) if row else None

    def all(self, tenant_id: str) -> list[EventType]:
        q = (
            select(t.event_types)
            .where(t.event_types.c.tenant_id == tenant_id)
            .order_by(t.event_types.c.name)
        )
        return [_event_type(r) for r in self.conn.execute(q)]


class SqlEndpointRepo:
    def __init__(self, conn: Connection, box: SecretBox) -> None:
        self.conn = conn
        self.box = box

    def add(self, endpoint: Endpoint) -> None:
        self.conn.execute(insert(t.endpoints).values(**_endpoint_values(endpoint, self.box)))

    def get(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        row = (
            self.conn.execute(
                select(t.endpoints).where(
                    t.endpoints.c.tenant_id == tenant_id,
                    t.endpoints.c.id == endpoint_id,
                    t.endpoints.c.deleted_at.is_(None),
                )
            )
        ).first()
        return endpoint_from_row(row, self.box) if row else None

    def page(self, tenant_id: str, *, limit: int, after: str | None) -> list[Endpoint]:
        q = (
            select(t.endpoints)
            .where(t.endpoints.c.tenant_id == tenant_id, t.endpoints.c.deleted_at.is_(None))
            .order_by(t.endpoints.c.id)
            .limit(limit)
        )
        if after is not None:
            q = q.where(t.endpoints.c.id > after)
        return [endpoint_from_row(r, self.box) for r in self.conn.execute(q)]

    def update(self, endpoint: Endpoint) -> None:
        values = _endpoint_values(endpoint, self.box)
        del values["id"], values["tenant_id"], values["created_at"]
        self.conn.execute(
            update(t.endpoints)
            .where(t.endpoints.c.tenant_id == endpoint.tenant_id, t.endpoints.c.id == endpoint.id)
            .values(**values)
        )

    def reset_health(self, tenant_id: str, endpoint_id: str) -> None:
        e = t.endpoints.c
        self.conn.execute(
            update(t.endpoints)
            .where(e.tenant_id == tenant_id, e.id == endpoint_id)
            .values(
                breaker_state=BreakerState.CLOSED.value,
                breaker_until=None,
                breaker_opened_at=None,
                consecutive_failures=0,
                failing_since=None,
            )
        )

    def delete(self, tenant_id: str, endpoint_id: str, now_ms: int) -> None:
        self.conn.execute(
            update(t.endpoints)
            .where(t.endpoints.c.tenant_id == tenant_id, t.endpoints.c.id == endpoint_id)
            .values(deleted_at=now_ms, updated_at=now_ms, version=t.endpoints.c.version + 1)
        )

    def subscriptions(self, tenant_id: str) -> list[tuple[Subscriber, frozenset[str]]]:
        # Subscriptions are a short JSON list per endpoint; a tenant has few endpoints, so
        # filtering in Python beats a per-backend JSON query. Only the three columns a
        # publish needs are read: this runs for every publish batch and money movement.
        return [
            (Subscriber(row.id, bool(row.ordered)), frozenset(orjson.loads(row.event_types)))
            for row in _SUBSCRIPTIONS.execute(self.conn, tenant_id=tenant_id)
        ]

    def seal_all(self) -> int:
        """Seal every secret stored in the clear or under an older key; how many were."""
        e = t.endpoints.c
        rows = self.conn.execute(select(e.id, e.secret, e.previous_secret)).all()
        count = 0
        for endpoint_id, secret, previous in rows:
            values: dict[str, str] = {}
            if self.box.needs_sealing(secret):
                values["secret"] = self.box.seal(self.box.open(secret))
            if previous is not None and self.box.needs_sealing(previous):
                values["previous_secret"] = self.box.seal(self.box.open(previous))
            if values:
                self.conn.execute(update(t.endpoints).where(e.id == endpoint_id).values(**values))
                count += 1
        return count

    def tenant_of(self, endpoint_id: str) -> str | None:
        q = select(t.endpoints.c.tenant_id).where(
            t.endpoints.c.id == endpoint_id, t.endpoints.c.deleted_at.is_(None)
        )
        return (self.conn.execute(q)).scalar_one_or_none()


class SqlEventRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add_many(self, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        values = [
            {
                "id": n.event.id,
                "tenant_id": n.event.tenant_id,
                "type": n.event.type,
                "schema_version": n.event.schema_version,
                "data": n.event.data_json.decode(),
                "ordering_key": n.event.ordering_key,
                "occurred_at": n.event.occurred_at_ms,
                "created_at": n.event.created_at_ms,
                "idempotency_key": n.idempotency_key,
                "fingerprint": n.fingerprint,
                "trace_id": n.event.trace_id,
                "delivery_count": n.delivery_count,
            }
            for n in events
        ]
        if len(values) <= _FEW_EVENTS:
            # A money movement's few events: a compiled insert each beats building the
            # many-rows insert, its sorted RETURNING and its batches.
            return [int(_INSERT_EVENT.execute(self.conn, **v).scalar_one()) for v in values]
        stmt = insert(t.events).returning(t.events.c.seq, sort_by_parameter_order=True)
        return [int(r.seq) for r in self.conn.execute(stmt, values)]

    def taken(
        self, tenant_id: str, *, ids: Sequence[str], idempotency_keys: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        e = t.events.c
        clauses = []
        if ids:
            clauses.append(e.id.in_(list(ids)))
        if idempotency_keys:
            clauses.append(e.idempotency_key.in_(list(idempotency_keys)))
        if not clauses:
            return set(), set()
        q = select(e.id, e.idempotency_key).where(e.tenant_id == tenant_id, or_(*clauses))
        rows = (self.conn.execute(q)).all()
        wanted_ids, wanted_keys = set(ids), set(idempotency_keys)
        return (
            {r.id for r in rows if r.id in wanted_ids},
            {r.idempotency_key for r in rows if r.idempotency_key in wanted_keys},
        )

    def find(
        self, tenant_id: str, *, event_id: str | None, idempotency_key: str | None
    ) -> StoredEvent | None:
        clauses = []
        if event_id is not None:
            clauses.append(t.events.c.id == event_id)
        if idempotency_key is not None:
            clauses.append(t.events.c.idempotency_key == idempotency_key)
        if not clauses:
            return None
        for clause in clauses:
            row = (
                self.conn.execute(select(t.events).where(t.events.c.tenant_id == tenant_id, clause))
            ).first()
            if row is not None:
                return StoredEvent(
                    event=event_from_row(row),
                    fingerprint=row.fingerprint,
                    delivery_count=row.delivery_count,
                    idempotency_key=row.idempotency_key,
                )
        return None

    def get(self, tenant_id: str, event_id: str) -> Event | None:
        row = (
            self.conn.execute(
                select(t.events).where(t.events.c.tenant_id == tenant_id, t.events.c.id == event_id)
            )
        ).first()
        return event_from_row(row) if row else None

    def page(
        self,
        tenant_id: str,
        *,
        event_type: str | None,
        since_ms: int | None,
        after_seq: int | None,
        limit: int,
    ) -> list[Event]:
        q = select(t.events).where(t.events.c.tenant_id == tenant_id)
        if event_type is not None:
            q = q.where(t.events.c.type == event_type)
        if since_ms is not None:
            q = q.where(t.events.c.created_at >= since_ms)
        if after_seq is not None:
            q = q.where(t.events.c.seq > after_seq)
        q = q.order_by(t.events.c.seq).limit(limit)
        return [event_from_row(r) for r in self.conn.execute(q)]


_DELIVERY_COLUMNS = (
    "id",
    "tenant_id",
    "event_seq",
    "event_id",
    "endpoint_id",
    "event_type",
    "status",
    "due_at",
    "ordered_key",
    "created_at",
    "updated_at",
)
#: One row per (event, endpoint) of a publish: a new delivery, due now, no attempt yet.
_EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "type",
    "schema_version",
    "data",
    "ordering_key",
    "occurred_at",
    "created_at",
    "idempotency_key",
    "fingerprint",
    "trace_id",
    "delivery_count",
)
_INSERT_EVENT = Statement(
    insert(t.events)
    .values({name: bindparam(name) for name in _EVENT_COLUMNS})
    .returning(t.events.c.seq)
)
#: Up to this many events, one compiled insert per event.
_FEW_EVENTS = 4

_SUBSCRIPTIONS = Statement(
    select(t.endpoints.c.id, t.endpoints.c.ordered, t.endpoints.c.event_types).where(
        t.endpoints.c.tenant_id == bindparam("tenant_id"),
        t.endpoints.c.deleted_at.is_(None),
        t.endpoints.c.disabled.is_(False),
    )
)

_INSERT_DELIVERIES = Prepared(
    insert(t.deliveries)
    .values(
        {
            **{name: bindparam(name) for name in _DELIVERY_COLUMNS},
            "attempts": literal_column("0"),
            "cycle_start": literal_column("0"),
        }
    )
    .inline(),
    _DELIVERY_COLUMNS,
)


class SqlDeliveryRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add_many(self, deliveries: Sequence[tuple[Event, NewDelivery]], now_ms: int) -> None:
        pending = DeliveryStatus.PENDING.value
        _INSERT_DELIVERIES.executemany(
            self.conn,
            [
                (
                    d.id,
                    event.tenant_id,
                    event.seq,
                    event.id,
                    d.endpoint_id,
                    event.type,
                    pending,
                    now_ms,
                    d.ordered_key,
                    now_ms,
                    now_ms,
                )
                for event, d in deliveries
            ],
        )

    def get(self, tenant_id: str, delivery_id: str) -> Delivery | None:
        row = (
            self.conn.execute(
                select(t.deliveries).where(
                    t.deliveries.c.tenant_id == tenant_id, t.deliveries.c.id == delivery_id
                )
            )
        ).first()
        return delivery_from_row(row) if row else None

    def page(
        self, tenant_id: str, flt: DeliveryFilter, *, before_seq: int | None, limit: int
    ) -> list[Delivery]:
        d = t.deliveries.c
        q = select(t.deliveries).where(d.tenant_id == tenant_id)
        if flt.endpoint_id is not None:
            q = q.where(d.endpoint_id == flt.endpoint_id)
        if flt.status is not None:
            q = q.where(d.status == flt.status.value)
        if flt.event_type is not None:
            q = q.where(d.event_type == flt.event_type)
        if flt.since_ms is not None:
            q = q.where(d.created_at >= flt.since_ms)
        if flt.event_id is not None:
            q = q.where(d.event_id == flt.event_id)
        if before_seq is not None:
            q = q.where(d.seq < before_seq)
        q = q.order_by(d.seq.desc()).limit(limit)
        return [delivery_from_row(r) for r in self.conn.execute(q)]

    def attempts(self, tenant_id: str, delivery_seq: int) -> list[Attempt]:
        a = t.attempts.c
        q = (
            select(t.attempts, t.deliveries.c.id.label("delivery_id"))
            .join(t.deliveries, t.deliveries.c.seq == a.delivery_seq)
            .where(a.tenant_id == tenant_id, a.delivery_seq == delivery_seq)
            .order_by(a.seq)
        )
        return [
            Attempt(
                id=r.id,
                delivery_id=r.delivery_id,
                number=r.number,
                request_headers=orjson.loads(r.request_headers),
                result=AttemptResult(
                    started_at_ms=r.started_at,
                    duration_ms=r.duration_ms,
                    status_code=r.status_code,
                    error=r.error,
                    response_headers=orjson.loads(r.response_headers),
                    response_body=r.response_body,
                ),
            )
            for r in self.conn.execute(q)
        ]

    def retry_now(self, tenant_id: str, delivery_id: str, now_ms: int) -> bool:
        d = t.deliveries.c
        res = self.conn.execute(
            update(t.deliveries)
            .where(d.tenant_id == tenant_id, d.id == delivery_id, _not_leased(now_ms))
            .values(_restart_values(now_ms))
        )
        return bool(res.rowcount)

    def replay(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        statuses: Sequence[DeliveryStatus],
        since_ms: int | None,
        until_ms: int | None,
        now_ms: int,
        after_seq: int | None,
        limit: int,
    ) -> tuple[int, int | None]:
        d = t.deliveries.c
        q = (
            select(d.seq)
            .where(
                _window(tenant_id, endpoint_id, statuses, since_ms, until_ms), _not_leased(now_ms)
            )
            .order_by(d.seq)
            .limit(limit)
        )
        if after_seq is not None:
            q = q.where(d.seq > after_seq)
        seqs = list((self.conn.execute(q)).scalars())
        if not seqs:
            return 0, None
        self.conn.execute(
            update(t.deliveries).where(d.seq.in_(seqs)).values(_restart_values(now_ms))
        )
        return len(seqs), seqs[-1]

    def revive_dead(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        died_since_ms: int,
        now_ms: int,
        after_seq: int | None,
        limit: int,
    ) -> tuple[int, int | None]:
        d = t.deliveries.c
        q = (
            select(d.seq)
            .where(
                d.tenant_id == tenant_id,
                d.endpoint_id == endpoint_id,
                d.status == DeliveryStatus.DEAD.value,
                d.updated_at >= died_since_ms,
            )
            .order_by(d.seq)
            .limit(limit)
        )
        if after_seq is not None:
            q = q.where(d.seq > after_seq)
        seqs = list(self.conn.execute(q).scalars())
        if not seqs:
            return 0, None
        self.conn.execute(
            update(t.deliveries).where(d.seq.in_(seqs)).values(_restart_values(now_ms))
        )
        return len(seqs), seqs[-1]

    def backfill(
        self,
        tenant_id: str,
        endpoint_id: str,
        event_types: Sequence[str],
        *,
        ordered: bool,
        since_ms: int,
        now_ms: int,
        after_seq: int | None,
        limit: int,
    ) -> tuple[int, int | None]:
        ev = t.events.c
        d = t.deliveries.c
        q = (
            select(ev.seq, ev.id, ev.type, ev.ordering_key)
            .where(
                ev.tenant_id == tenant_id,
                ev.type.in_(list(event_types)),
                ev.created_at >= since_ms,
            )
            .order_by(ev.seq)
            .limit(limit)
        )
        if after_seq is not None:
            q = q.where(ev.seq > after_seq)
        events = self.conn.execute(q).all()
        if not events:
            return 0, None
        has = set(
            self.conn.execute(
                select(d.event_seq).where(
                    d.endpoint_id == endpoint_id, d.event_seq.in_([e.seq for e in events])
                )
            ).scalars()
        )
        pending = DeliveryStatus.PENDING.value
        rows = [
            (
                new_id("dlv", now_ms=now_ms),
                tenant_id,
                e.seq,
                e.id,
                endpoint_id,
                e.type,
                pending,
                now_ms,
                e.ordering_key if ordered else None,
                now_ms,
                now_ms,
            )
            for e in events
            if e.seq not in has
        ]
        if rows:
            _INSERT_DELIVERIES.executemany(self.conn, rows)
        return len(rows), events[-1].seq

    def count(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        statuses: Sequence[DeliveryStatus],
        since_ms: int | None,
        until_ms: int | None,
    ) -> int:
        q = select(func.count()).where(
            _window(tenant_id, endpoint_id, statuses, since_ms, until_ms)
        )
        return int((self.conn.execute(q)).scalar_one())

    def cancel_open(self, tenant_id: str, endpoint_id: str, now_ms: int) -> int:
        d = t.deliveries.c
        res = self.conn.execute(
            update(t.deliveries)
            .where(
                d.tenant_id == tenant_id,
                d.endpoint_id == endpoint_id,
                d.status.in_([s.value for s in OPEN_STATUSES]),
            )
            .values(
                status=DeliveryStatus.CANCELLED.value,
                due_at=None,
                lease_until=None,
                lease_owner=None,
                updated_at=now_ms,
            )
        )
        return int(res.rowcount)


def _window(
    tenant_id: str,
    endpoint_id: str,
    statuses: Sequence[DeliveryStatus],
    since_ms: int | None,
    until_ms: int | None,
) -> Any:
    d = t.deliveries.c
    clauses = [
        d.tenant_id == tenant_id,
        d.endpoint_id == endpoint_id,
        d.status.in_([s.value for s in statuses]),
    ]
    if since_ms is not None:
        clauses.append(d.created_at >= since_ms)
    if until_ms is not None:
        clauses.append(d.created_at < until_ms)
    return and_(*clauses)


def _not_leased(now_ms: int) -> Any:
    """Rows no dispatcher is sending right now (restarting those could send them twice)."""
    d = t.deliveries.c
    return or_(d.lease_until.is_(None), d.lease_until < now_ms)


def _restart_values(now_ms: int) -> dict[str, Any]:
    """A delivery that starts a new retry cycle: due now, with the full schedule ahead."""
    d = t.deliveries.c
    return {
        "status": DeliveryStatus.PENDING.value,
        "due_at": now_ms,
        "cycle_start": d.attempts,
        "lease_until": None,
        "lease_owner": None,
        "updated_at": now_ms,
    }


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(id=row.id, name=row.name, created_at_ms=row.created_at)


def _event_type(row: Row[Any]) -> EventType:
    return EventType(
        name=row.name,
        schema=orjson.loads(row.schema),
        schema_version=row.schema_version,
        description=row.description,
        category="custom",
        builtin=False,
        core=row.core,
    )


def _endpoint_values(e: Endpoint, box: SecretBox) -> dict[str, Any]:
    return {
        "id": e.id,
        "tenant_id": e.tenant_id,
        "url": e.url,
        "description": e.description,
        "event_types": orjson.dumps(list(e.event_types)).decode(),
        "secret": box.seal(e.secret),
        "dialect": e.dialect,
        "header_prefix": e.header_prefix,
        "format": e.format,
        "previous_secret": box.seal(e.previous_secret) if e.previous_secret is not None else None,
        "previous_secret_until": e.previous_secret_until_ms,
        "headers": orjson.dumps(dict(e.headers)).decode(),
        "timeout_ms": e.timeout_ms,
        "retry_schedule": orjson.dumps(list(e.retry_schedule)).decode(),
        "ordered": e.ordered,
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
        "created_at": e.created_at_ms,
        "updated_at": e.updated_at_ms,
        "version": e.version,
        # The controls, not the health: workers write that, and a change of the endpoint
        # must not undo what they wrote meanwhile.
        "rate_limit_per_s": e.rate_limit_per_s,
        "max_in_flight": e.max_in_flight,
        "breaker": (
            None
            if e.breaker_settings == DEFAULT_BREAKER
            else orjson.dumps(e.breaker_settings.to_json()).decode()
        ),
        "disabled_at": e.disabled_at_ms,
    }


def endpoint_from_row(row: Row[Any], box: SecretBox) -> Endpoint:
    return Endpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        description=row.description,
        event_types=tuple(orjson.loads(row.event_types)),
        secret=box.open(row.secret),
        dialect=row.dialect,
        header_prefix=row.header_prefix,
        format=row.format,
        previous_secret=box.open(row.previous_secret) if row.previous_secret is not None else None,
        previous_secret_until_ms=row.previous_secret_until,
        headers=orjson.loads(row.headers),
        timeout_ms=row.timeout_ms,
        retry_schedule=tuple(orjson.loads(row.retry_schedule)),
        ordered=row.ordered,
        disabled=row.disabled,
        disabled_reason=row.disabled_reason,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
        version=row.version,
        rate_limit_per_s=row.rate_limit_per_s,
        max_in_flight=row.max_in_flight,
        breaker_settings=BreakerSettings.from_json(
            orjson.loads(row.breaker) if row.breaker is not None else None
        ),
        breaker=Breaker(
            BreakerState(row.breaker_state),
            row.breaker_until,
            row.consecutive_failures,
            row.breaker_opened_at,
        ),
        failing_since_ms=row.failing_since,
        last_success_at_ms=row.last_success_at,
        disabled_at_ms=row.disabled_at,
    )


def event_from_row(row: Row[Any]) -> Event:
    return Event(
        seq=row.seq,
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        schema_version=row.schema_version,
        data_json=row.data.encode(),
        ordering_key=row.ordering_key,
        occurred_at_ms=row.occurred_at,
        created_at_ms=row.created_at,
        trace_id=row.trace_id,
    )


def delivery_from_row(row: Row[Any]) -> Delivery:
    return Delivery(
        seq=row.seq,
        id=row.id,
        tenant_id=row.tenant_id,
        event_id=row.event_id,
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at_ms=row.due_at,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        ordered_key=row.ordered_key,
    )
