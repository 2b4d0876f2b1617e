"""Endpoint health, kept in the transaction that records outcomes: the circuit breaker, the
run of failures, and the auto-disable it leads to.

Every worker reads and writes the same rows (on PostgreSQL under a row lock), so there is
one breaker per endpoint however many workers deliver, and a restart loses none of it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import structlog
from sqlalchemy import String, bindparam, select, update
from sqlalchemy.engine import Connection

from croupier.domain.health import (
    Breaker,
    BreakerSettings,
    BreakerState,
    after_attempts,
)
from croupier.services.notices import delivery_dead, endpoint_disabled, reports_death
from croupier.services.ports import NewEvent, Outcome
from croupier.store import tables as t
from croupier.store.stats import window_counts

log = structlog.get_logger("croupier.dispatch")

#: An endpoint that fails without a single success for this long is disabled.
AUTO_DISABLE_AFTER_MS = 5 * 86_400_000
_DAY_MS = 86_400_000


class HealthChange(NamedTuple):
    #: Notices to publish: ``endpoint.disabled`` and ``delivery.dead``.
    notices: list[NewEvent]
    #: Endpoints that must get no more sends: their breaker opened, or they were disabled.
    stopped: frozenset[str]


def update_health(
    pg: bool,
    outcomes: Sequence[Outcome],
    now_ms: int,
    auto_disable_after_ms: int,
    conn: Connection,
) -> HealthChange:
    """Apply the outcomes to their endpoints' health."""
    by_endpoint: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_endpoint.setdefault(o.claim.endpoint_id, []).append(o)
    rows = {r.id: r for r in conn.execute(_read_statement(pg), {"ids": sorted(by_endpoint)})}
    notices: list[NewEvent] = []
    stopped: set[str] = set()
    for endpoint_id, mine in by_endpoint.items():
        row = rows.get(endpoint_id)
        if row is None:
            continue  # deleted meanwhile
        disabled, stops = _apply(row, mine, now_ms, auto_disable_after_ms, conn)
        notices += disabled
        if stops:
            stopped.add(endpoint_id)
        notices += [delivery_dead(o, row.url, now_ms) for o in mine if reports_death(o)]
    return HealthChange(notices, frozenset(stopped))


def _apply(
    row: Any,
    outcomes: list[Outcome],
    now_ms: int,
    auto_disable_after_ms: int,
    conn: Connection,
) -> tuple[list[NewEvent], bool]:
    """Write the endpoint's new health; (the notice of its disabling, if any, whether it
    must get no more sends now)."""
    settings = BreakerSettings.from_json(
        orjson.loads(row.breaker) if row.breaker is not None else None
    )
    before = Breaker(
        BreakerState(row.breaker_state),
        row.breaker_until,
        row.consecutive_failures,
        row.breaker_opened_at,
    )
    failing_since: int | None = row.failing_since
    last_success: int | None = row.last_success_at
    gone = False
    for o in outcomes:
        result = o.attempt.result
        if result.succeeded:
            failing_since = None
            last_success = max(last_success or 0, result.started_at_ms)
        else:
            failing_since = failing_since or result.started_at_ms
            gone = gone or o.decision.disable_endpoint
    results = [o.attempt.result.succeeded for o in outcomes]
    after = after_attempts(before, results, now_ms=now_ms, settings=settings)
    if after.state is BreakerState.CLOSED and not all(results):
        # The run did not open it: the failure rate over the window may.
        window = window_counts(conn, row.id, now_ms - settings.window_s * 1000)
        after = after_attempts(before, results, now_ms=now_ms, settings=settings, window=window)
    if after.state is not before.state:
        log.info(
            "circuit breaker",
            endpoint_id=row.id,
            state=after.state.value,
            consecutive_failures=after.consecutive_failures,
        )
    disabled_for: str | None = None
    if not row.disabled:
        if gone:
            disabled_for = "the endpoint answered 410 Gone"
        elif failing_since is not None and now_ms - failing_since >= auto_disable_after_ms:
            days = auto_disable_after_ms / _DAY_MS
            disabled_for = f"no successful delivery for {days:g} days"
    values: dict[str, Any] = {
        "breaker_state": after.state.value,
        "breaker_until": after.until_ms,
        "breaker_opened_at": after.opened_at_ms,
        "consecutive_failures": after.consecutive_failures,
        "failing_since": failing_since,
        "last_success_at": last_success,
    }
    if disabled_for is not None:
        values |= {
            "disabled": True,
            "disabled_reason": disabled_for,
            "disabled_at": now_ms,
            "updated_at": now_ms,
            # Senders learn the endpoint anew; claims skip it from now on.
            "version": row.version + 1,
        }
    if disabled_for is not None or _changed(row, values):
        conn.execute(
            update(t.endpoints).where(t.endpoints.c.id == bindparam("endpoint", type_=String)),
            {"endpoint": row.id, **values},
        )
    opened = after.state is BreakerState.OPEN and before.state is not BreakerState.OPEN
    if disabled_for is None:
        return [], opened
    log.warning("endpoint disabled", endpoint_id=row.id, reason=disabled_for)
    return [
        endpoint_disabled(
            row.tenant_id,
            row.id,
            row.url,
            gone=gone,
            message=disabled_for,
            failing_since_ms=failing_since,
            now_ms=now_ms,
        )
    ], True


#: ``last_success_at`` alone is written at most this often per endpoint: a healthy endpoint
#: must not cost a write of its row with every batch of outcomes.
LAST_SUCCESS_GRAIN_MS = 1_000


def _changed(row: Any, values: dict[str, Any]) -> bool:
    """Whether the new health differs from the stored one enough to write it."""
    for name, value in values.items():
        if name == "last_success_at":
            if value is not None and (
                row.last_success_at is None or value - row.last_success_at >= LAST_SUCCESS_GRAIN_MS
            ):
                return True
        elif getattr(row, name) != value:
            return True
    return False


@functools.cache
def _read_statement(pg: bool) -> Any:
    e = t.endpoints.c
    q = select(
        e.id,
        e.tenant_id,
        e.url,
        e.disabled,
        e.version,
        e.breaker,
        e.breaker_state,
        e.breaker_until,
        e.breaker_opened_at,
        e.consecutive_failures,
        e.failing_since,
        e.last_success_at,
    ).where(e.id.in_(bindparam("ids", expanding=True)))
    # Workers recording for the same endpoint take turns: counts are never lost. FOR NO
    # KEY UPDATE: a publish inserting deliveries holds a key-share lock on the endpoints
    # (their foreign key), which must not wait for this, nor this for it (a deadlock).
    return q.order_by(e.id).with_for_update(key_share=True) if pg else q
