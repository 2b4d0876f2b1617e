"""What the use cases need from the outside world, as Protocols.

``store`` implements them on SQLAlchemy; the services and the dispatcher only see these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from croupier.domain.deliveries import Attempt, Decision, Delivery, DeliveryStatus
from croupier.domain.endpoints import Endpoint
from croupier.domain.events import Event, EventType
from croupier.domain.money import Currency
from croupier.domain.tenants import ApiKey, Tenant
from croupier.domain.wallet import Bet, Credit, GameSession, PlayerAccount, WalletTransaction

T = TypeVar("T")


@dataclass(frozen=True)
class StoredEvent:
    """An event as first accepted, with what is needed to answer a replay of its publish."""

    event: Event
    fingerprint: str
    delivery_count: int
    idempotency_key: str | None


@dataclass(frozen=True)
class NewEvent:
    """An event to insert, with what answers a replay of its publish."""

    event: Event
    fingerprint: str
    idempotency_key: str | None
    delivery_count: int


@dataclass(frozen=True)
class NewDelivery:
    id: str
    endpoint_id: str
    ordered_key: str | None


class Subscriber(NamedTuple):
    """What a publish needs of an endpoint that takes the event: read on every publish."""

    id: str
    ordered: bool


@dataclass(frozen=True)
class DeliveryFilter:
    endpoint_id: str | None = None
    status: DeliveryStatus | None = None
    event_type: str | None = None
    since_ms: int | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Claim:
    """A delivery the dispatcher holds under lease, with the event it carries."""

    seq: int
    id: str
    endpoint_id: str
    endpoint_version: int
    attempts: int
    cycle_start: int
    event: Event
    #: Set when the endpoint delivers in order: the next of this key waits for this one.
    ordered_key: str | None = None


@dataclass(frozen=True)
class ClaimBatch:
    """What one claim leased, in ``seq`` order. ``more`` is True when the claim stopped at its
    limit, so more may be due right now."""

    claims: list[Claim]
    more: bool
    #: When an endpoint left out for its rate limit or breaker can take more (clock ms);
    #: None when none was left out.
    wake_at_ms: int | None = None
    #: Endpoints the outcomes recorded with the claim stopped (breaker opened, disabled).
    stopped: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt of a claimed delivery and what it decided."""

    claim: Claim
    attempt: Attempt
    decision: Decision


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer given under an idempotency key, and what request it answered."""

    fingerprint: str
    outcome: dict[str, Any]


@dataclass(frozen=True)
class LedgerReport:
    """What ``croupier wallet check`` found: counts, the tenants' own accounts
    (tenant, account, currency, balance), and examples of each kind of violation."""

    counts: dict[str, int]
    tenant_accounts: list[tuple[str, str, str, int]]
    violations: dict[str, list[str]]


@dataclass(frozen=True)
class RecentError:
    """An endpoint's latest failed attempt: what went wrong, and when it started."""

    message: str
    status_code: int | None
    at_ms: int


@dataclass(frozen=True)
class WindowTotals:
    """An endpoint's attempts over a window of whole minutes, summed."""

    attempts: int
    failures: int
    #: Attempts per latency bucket (``croupier.domain.health.LATENCY_BOUNDS_MS``).
    histogram: tuple[int, ...]
    last_error: RecentError | None


class TenantRepo(Protocol):
    def add(self, tenant: Tenant) -> None: ...
    def get(self, tenant_id: str) -> Tenant | None: ...
    def get_by_name(self, name: str) -> Tenant | None: ...
    def page(self, *, limit: int, after: str | None) -> list[Tenant]: ...


class KeyRepo(Protocol):
    def add(self, key: ApiKey) -> None: ...
    def find_by_hash(self, key_hash: str) -> ApiKey | None: ...
    def has_admin(self) -> bool: ...


class EventTypeRepo(Protocol):
    def upsert(self, tenant_id: str, event_type: EventType, now_ms: int) -> None: ...
    def get(self, tenant_id: str, name: str) -> EventType | None: ...
    def all(self, tenant_id: str) -> list[EventType]: ...


class EndpointRepo(Protocol):
    def add(self, endpoint: Endpoint) -> None: ...
    def get(self, tenant_id: str, endpoint_id: str) -> Endpoint | None: ...
    def page(self, tenant_id: str, *, limit: int, after: str | None) -> list[Endpoint]: ...
    def update(self, endpoint: Endpoint) -> None: ...
    def delete(self, tenant_id: str, endpoint_id: str, now_ms: int) -> None: ...
    def reset_health(self, tenant_id: str, endpoint_id: str) -> None:
        """Close the breaker and forget the run of failures (an endpoint enabled again)."""
        ...

    def subscriptions(self, tenant_id: str) -> list[tuple[Subscriber, frozenset[str]]]:
        """The live, enabled endpoints of the tenant, each with the types it takes."""
        ...

    def tenant_of(self, endpoint_id: str) -> str | None:
        """The owner of an endpoint: for operator tools that hold the database, never the API."""
        ...


class EventRepo(Protocol):
    def add_many(self, events: Sequence[NewEvent]) -> list[int]:
        """Insert; return the new ``seq`` of each, in order. An id or idempotency key that
        is taken fails the whole unit of work with ``ConcurrentWrite``."""
        ...

    def taken(
        self, tenant_id: str, *, ids: Sequence[str], idempotency_keys: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Which of these event ids and idempotency keys the tenant has used already."""
        ...

    def find(
        self, tenant_id: str, *, event_id: str | None, idempotency_key: str | None
    ) -> StoredEvent | None: ...
    def get(self, tenant_id: str, event_id: str) -> Event | None: ...
    def page(
        self,
        tenant_id: str,
        *,
        event_type: str | None,
        since_ms: int | None,
        after_seq: int | None,
        limit: int,
    ) -> list[Event]: ...


class DeliveryRepo(Protocol):
    def add_many(self, deliveries: Sequence[tuple[Event, NewDelivery]], now_ms: int) -> None:
        """One pending delivery per (stored event, endpoint) pair, due now."""
        ...

    def get(self, tenant_id: str, delivery_id: str) -> Delivery | None: ...
    def page(
        self, tenant_id: str, flt: DeliveryFilter, *, before_seq: int | None, limit: int
    ) -> list[Delivery]: ...
    def attempts(self, tenant_id: str, delivery_seq: int) -> list[Attempt]: ...
    def retry_now(self, tenant_id: str, delivery_id: str, now_ms: int) -> bool:
        """Make the delivery due now with a fresh schedule; False if it is being sent."""
        ...

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
        """Make up to ``limit`` matches past ``after_seq`` due now; return (count, last seq)."""
        ...

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
        """Make up to ``limit`` of the endpoint's deliveries that died at or after
        ``died_since_ms`` due now, past ``after_seq``; return (count, last seq)."""
        ...

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
        """Give the endpoint a delivery, due now, of each event of ``event_types``
        published at or after ``since_ms`` that it has none of (it was disabled), looking
        at up to ``limit`` events past ``after_seq``; return (deliveries made, last event
        seq looked at, None when there were no more)."""
        ...

    def count(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        statuses: Sequence[DeliveryStatus],
        since_ms: int | None,
        until_ms: int | None,
    ) -> int: ...
    def cancel_open(self, tenant_id: str, endpoint_id: str, now_ms: int) -> int: ...


class WalletRepo(Protocol):
    def claim_key(self, tenant_id: str, key: str) -> tuple[bool, IdempotencyRecord | None]:
        """Hold the idempotency key until the transaction ends, and read its first answer:
        (False if another transaction holds the key, the first answer or None)."""
        ...

    def record(self, tenant_id: str, key: str) -> IdempotencyRecord | None: ...
    def save_record(
        self,
        tenant_id: str,
        key: str,
        fingerprint: str,
        outcome: dict[str, Any],
        *,
        now_ms: int,
        expires_at_ms: int,
    ) -> None: ...
    def purge_records(self, now_ms: int, limit: int) -> int: ...
    def currency(self, tenant_id: str, code: str) -> Currency | None: ...
    def currencies(self, tenant_id: str) -> list[Currency]: ...
    def add_currency(self, tenant_id: str, currency: Currency, now_ms: int) -> None: ...
    def player(
        self,
        tenant_id: str,
        player_id: str,
        *,
        exponent_of: Callable[[str], int],
        lock: bool = False,
    ) -> PlayerAccount | None:
        """The player's account; ``lock`` holds it until the transaction ends."""
        ...

    def add_player(self, account: PlayerAccount) -> None: ...
    def set_balances(
        self, tenant_id: str, player_id: str, available: int, held: int, now_ms: int
    ) -> None: ...
    def session(self, tenant_id: str, session_id: str) -> GameSession | None: ...
    def add_session(self, session: GameSession) -> None: ...
    def bet(self, tenant_id: str, bet_id: str, *, lock: bool = False) -> Bet | None:
        """The bet; ``lock`` holds it until the transaction ends."""
        ...

    def add_bet(self, bet: Bet) -> None: ...
    def resolve_bet(self, bet: Bet, status: str, win: int | None, now_ms: int) -> bool:
        """Authorized -> ``status``; False if the bet was not authorized any more."""
        ...

    def credit(self, tenant_id: str, credit_id: str) -> Credit | None: ...
    def add_credit(self, credit: Credit) -> None: ...
    def add_transaction(self, tx: WalletTransaction) -> int: ...
    def transaction_of(self, tenant_id: str, kind: str, reference: str) -> str | None: ...
    def transactions(
        self, tenant_id: str, player_id: str, *, before_seq: int | None, limit: int
    ) -> list[WalletTransaction]: ...
    def report(self, *, limit: int) -> LedgerReport: ...


class StatsRepo(Protocol):
    def windows(
        self, tenant_id: str, endpoint_id: str, *, now_ms: int, windows_ms: Sequence[int]
    ) -> list[WindowTotals]:
        """The endpoint's totals over each window ending at ``now_ms``, in order."""
        ...

    def purge(self, before_ms: int, limit: int) -> int:
        """Forget up to ``limit`` minutes that started before ``before_ms``; how many."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every repository (see :meth:`Store.run`)."""

    @property
    def tenants(self) -> TenantRepo: ...
    @property
    def keys(self) -> KeyRepo: ...
    @property
    def event_types(self) -> EventTypeRepo: ...
    @property
    def endpoints(self) -> EndpointRepo: ...
    @property
    def events(self) -> EventRepo: ...
    @property
    def deliveries(self) -> DeliveryRepo: ...
    @property
    def wallet(self) -> WalletRepo: ...
    @property
    def stats(self) -> StatsRepo: ...


class Store(Protocol):
    async def run(
        self, work: Callable[[UnitOfWork], T], *, write: bool = True, urgent: bool = False
    ) -> T:
        """Run ``work`` inside one transaction, which commits when it returns and rolls back
        when it raises. ``urgent`` writes (money) go before the others where writes queue.

        ``work`` is synchronous and runs where the store does its I/O (another thread): it
        must touch only the unit of work and plain values, never the caller's futures.
        """
        ...


class DeliveryQueue(Protocol):
    """The dispatcher's view of the store: leased claims and batched outcomes."""

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
        """Lease up to ``limit`` due deliveries, at most ``rooms[e]`` for endpoint ``e``
        (``default_room`` for an endpoint not named; 0 skips it), within each endpoint's
        rate limit and circuit breaker.

        First attempts and money events (``wallet.*``) go first, oldest due first; then
        retries of other events, at most ``retry_room`` of them (None: no cap). ``paused``
        leaves out the events of non-core types (overload). ``default_room`` goes with a
        concurrency of ``default_max_in_flight``: an endpoint not named in ``rooms`` with a
        concurrency of its own gets a room in proportion."""
        ...

    async def endpoints(self, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]: ...
    async def record(self, owner: str, outcomes: Sequence[Outcome], now_ms: int) -> frozenset[str]:
        """Write the attempts and the deliveries' new status; count them in their
        endpoints' stats and health (breaker, run of failures, auto-disable); publish
        ``delivery.dead`` and ``endpoint.disabled`` to the tenant's own endpoints. Returns
        the endpoints these outcomes stopped: their breaker opened, or they were disabled."""
        ...

    async def due_backlog(self, now_ms: int, *, at_most: int) -> int:
        """How many deliveries are due and free, counted up to ``at_most``."""
        ...

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
        """:meth:`record`, then :meth:`claim`, in one transaction: the claim sees the
        outcomes (a retry due at once may be claimed again), and both happen or neither."""
        ...

    async def renew(self, owner: str, seqs: Sequence[int], until_ms: int) -> None: ...
    async def release(self, owner: str, seqs: Sequence[int]) -> None: ...
    async def release_all(self) -> int:
        """Drop every lease (only safe when this process is the store's only worker)."""
        ...
