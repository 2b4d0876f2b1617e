"""The one place that wires settings, store, services and dispatcher together."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from croupier.config import Settings
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.dispatch.transport import SenderPool
from croupier.domain.clock import Clock, ScaledClock, SystemClock
from croupier.domain.retry import RetryPolicy
from croupier.services.deliveries import DeliveryService
from croupier.services.endpoint_stats import EndpointStatsService
from croupier.services.endpoints import EndpointService
from croupier.services.event_types import EventTypeService
from croupier.services.publish import PublishService
from croupier.services.tenants import Bootstrap, TenantService
from croupier.services.wallet import WalletService
from croupier.store.engine import Database, is_sqlite, open_database
from croupier.store.lock import FileOwnership
from croupier.store.migrate import migrate, pending_migrations
from croupier.store.queue import SqlDeliveryQueue
from croupier.store.repositories import SqlStore
from croupier.store.secretbox import load_secret_box

log = structlog.get_logger("croupier")

#: Expired idempotency keys and old endpoint stats are forgotten this often, this many per
#: transaction.
UPKEEP_EVERY_S = 600.0
UPKEEP_BATCH = 1000
#: At most this many transactions per round: the rest wait for the next round.
UPKEEP_ROUNDS = 100


class SchemaOutOfDate(RuntimeError):
    pass


async def seal_secrets(store: SqlStore) -> int:
    """Seal the endpoint secrets stored in the clear or under an older key; how many."""
    return await store.run(lambda uow: uow.endpoints.seal_all())


@dataclass
class Container:
    """Everything a running croupier holds; built by :func:`build`, closed by ``close``."""

    settings: Settings
    db: Database
    clock: Clock
    store: SqlStore
    tenants: TenantService
    event_types: EventTypeService
    endpoints: EndpointService
    publish: PublishService
    deliveries: DeliveryService
    wallet: WalletService
    endpoint_stats: EndpointStatsService
    dispatcher: Dispatcher
    bootstrap: Bootstrap | None = None
    #: Endpoints whose secrets were sealed (again) while starting.
    sealed_at_start: int = 0
    _ownership: FileOwnership | None = field(default=None, repr=False)
    _dispatcher_running: bool = False
    _upkeep: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Start delivering in the background (if the settings say this process should),
        and forgetting expired idempotency keys and endpoint stats past their retention."""
        if self.settings.dispatcher_enabled and not self._dispatcher_running:
            await self.dispatcher.start()
            self._dispatcher_running = True
        if self._upkeep is None:
            self._upkeep = asyncio.create_task(self._forget_expired())

    async def _forget_expired(self) -> None:
        while True:
            await _purge(
                lambda: self.wallet.purge_idempotency(limit=UPKEEP_BATCH),
                "forgetting expired idempotency keys",
            )
            await _purge(
                lambda: self.endpoint_stats.purge(limit=UPKEEP_BATCH),
                "forgetting old endpoint stats",
            )
            await asyncio.sleep(UPKEEP_EVERY_S)

    async def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
            self._upkeep = None
        if self._dispatcher_running:
            await self.dispatcher.stop(self.settings.drain_seconds)
            self._dispatcher_running = False
        else:
            # run_until_idle() may have opened it (tests, tools); closing an unopened one is free.
            await self.dispatcher.transport.close()
        try:
            await self.db.close()
        finally:
            if self._ownership is not None:
                self._ownership.release()

    async def ping(self) -> None:
        await self.db.ping()


async def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    auto_migrate: bool | None = None,
    own_store: bool = True,
    generate_admin_key: bool = True,
) -> Container:
    """Open the store (migrating SQLite by itself), bootstrap tenants, and wire services.

    ``own_store`` takes the SQLite file's lock and clears leases left by a killed process:
    on SQLite a single process delivers, so no one else can be holding them.
    ``generate_admin_key`` is for ``serve``, which can show the key it makes; a one-shot
    command must not make a key nobody will ever see.
    """
    clock = clock or (
        SystemClock() if settings.time_scale == 1 else ScaledClock(settings.time_scale)
    )
    sqlite = is_sqlite(settings.database_url)
    key = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    box = load_secret_box(key, settings.database_url, sqlite=sqlite)
    db = open_database(settings.database_url)
    ownership = None
    queue = SqlDeliveryQueue(
        db, box=box, auto_disable_after_ms=int(settings.auto_disable_days * 86_400_000)
    )
    store = SqlStore(db, box=box)
    try:
        if sqlite and own_store:
            ownership = FileOwnership(db.url)
            ownership.acquire()
        migrating = auto_migrate if auto_migrate is not None else sqlite
        if migrating:
            await migrate(db)
        elif await pending_migrations(db):
            raise SchemaOutOfDate(
                "the database schema is not up to date: run `croupier migrate` first"
            )
        sealed = 0
        if migrating or ownership is not None:
            # Rows from before secrets were sealed, or sealed under a key since replaced.
            sealed = await seal_secrets(store)
        if ownership is not None:
            await queue.release_all()
    except BaseException:
        if ownership is not None:
            ownership.release()
        await db.close()
        raise
    dispatch = DispatcherConfig(
        claim_batch=settings.claim_batch,
        max_in_flight=settings.max_in_flight,
        endpoint_max_in_flight=settings.endpoint_max_in_flight,
        max_retries_in_flight=settings.max_retries_in_flight,
        overload_backlog=settings.overload_backlog,
        lease_ms=int(settings.lease_seconds * 1000),
        idle_poll_s=settings.idle_poll_seconds,
        flush_batch=settings.flush_batch,
        time_scale=settings.time_scale,
        time_origin=clock.origin if isinstance(clock, ScaledClock) else None,
        environment=settings.environment,
        address_policy=settings.address_policy(),
        retry=RetryPolicy(
            jitter=settings.retry_jitter, retry_after_cap_s=settings.retry_after_cap_seconds
        ),
    )
    dispatcher = Dispatcher(
        queue,
        clock=clock,
        rng=rng,
        config=dispatch,
        # The children start with the dispatcher, so one-shot commands never start one.
        transport=(
            SenderPool(dispatch.courier, processes=senders, log_level=settings.log_level)
            if (senders := settings.sender_processes())
            else None
        ),
    )
    event_types = EventTypeService(store, clock)
    tenants = TenantService(store, clock)
    container = Container(
        settings=settings,
        db=db,
        clock=clock,
        store=store,
        tenants=tenants,
        event_types=event_types,
        endpoints=EndpointService(
            store, clock, event_types, address_policy=settings.address_policy()
        ),
        publish=PublishService(store, clock, event_types, on_published=dispatcher.notify),
        deliveries=DeliveryService(store, clock, on_due=dispatcher.notify),
        wallet=WalletService(
            store,
            clock,
            on_events=dispatcher.notify,
            idempotency_ttl_ms=settings.idempotency_days * 86_400_000,
            session_ttl_s=settings.session_ttl_seconds,
        ),
        endpoint_stats=EndpointStatsService(store, clock),
        dispatcher=dispatcher,
        sealed_at_start=sealed,
        _ownership=ownership,
    )
    container.bootstrap = await tenants.bootstrap(settings.admin_key, generate=generate_admin_key)
    return container


async def _purge(chunk: Callable[[], Awaitable[int]], what: str) -> None:
    """Forget a chunk at a time until one comes back short, or the round's limit; a failure
    (the database away) waits for the next round, and does not keep the other purges back."""
    try:
        for _ in range(UPKEEP_ROUNDS):
            if await chunk() < UPKEEP_BATCH:
                break
    except Exception:
        log.exception(f"{what} failed; trying again later")
