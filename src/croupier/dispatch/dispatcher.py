"""The delivery engine: claim due deliveries, have them sent, record what happened.

* the claimer leases due deliveries in batches, never more than the global and per-endpoint
  limits allow, and submits each batch to a transport;
* the transport's courier, in this event loop or in a sender child process, renders, signs
  and sends each delivery within the concurrency limits, and reports back in batches; each
  result is decided here (succeeded, retry when, dead) and queued as an outcome;
* the recorder commits queued outcomes in one transaction per batch ("group commit"): under
  load many outcomes share a commit; at rest each commits at once, so latency stays low.

A heartbeat renews the leases of everything held. Every piece of state here can be rebuilt
from the store, so a crash loses nothing: leases run out and the deliveries become due again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from croupier.dispatch.courier import CourierConfig, Report
from croupier.dispatch.sender import HttpSender
from croupier.dispatch.transport import Assignment, LocalTransport, Transport
from croupier.domain.clock import Clock
from croupier.domain.deliveries import Attempt, decide
from croupier.domain.endpoints import Endpoint
from croupier.domain.events import is_money
from croupier.domain.ids import new_id
from croupier.domain.network import AddressPolicy
from croupier.domain.retry import RetryPolicy
from croupier.services.ports import Claim, ClaimBatch, DeliveryQueue, Outcome

log = structlog.get_logger("croupier.dispatch")

_MAX_RECORD_FAILURES = 10
#: Deliveries held (claimed, sent or waiting to be) per concurrent request allowed.
HELD_PER_SLOT = 4


@dataclass(frozen=True)
class DispatcherConfig:
    claim_batch: int = 500
    max_in_flight: int = 512
    endpoint_max_in_flight: int = 16
    lease_ms: int = 60_000
    idle_poll_s: float = 1.0
    flush_batch: int = 1000
    #: Retries of other than money events held at once, across all endpoints: a mass
    #: outage cannot take the slots that first attempts need.
    max_retries_in_flight: int = 128
    #: Due deliveries beyond which non-core event types are paused (kept, not sent) until
    #: the backlog is down to half of it.
    overload_backlog: int = 100_000
    #: How often (s, real time) the due backlog is counted.
    overload_check_s: float = 1.0
    #: How much faster than the wall clock the dispatcher's clock runs (tests and drills):
    #: leases are in clock time, so the heartbeat that renews them beats that much faster.
    time_scale: float = 1.0
    #: With a time scale: the scaled clock's origin, for sender processes (see CourierConfig).
    time_origin: tuple[int, int] | None = None
    environment: str = "production"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)

    @property
    def held_limit(self) -> int:
        """Deliveries held in memory at once: enough to keep every slot busy through the
        round trip of a claim, a send in the sender and the record of its outcome. At twice
        the slots, senders ran dry while the store caught up (4,100-4,400 deliveries/s in
        the throughput bench); at four times, 4,700-6,000."""
        return HELD_PER_SLOT * self.max_in_flight

    @property
    def endpoint_held_limit(self) -> int:
        return HELD_PER_SLOT * self.endpoint_max_in_flight

    def held_limit_of(self, endpoint: Endpoint | None) -> int:
        """Deliveries held at once for ``endpoint`` (its own concurrency, or the default)."""
        if endpoint is None or endpoint.max_in_flight is None:
            return self.endpoint_held_limit
        return HELD_PER_SLOT * endpoint.max_in_flight

    @property
    def courier(self) -> CourierConfig:
        """What the courier that sends for this dispatcher must know."""
        return CourierConfig(
            max_in_flight=self.max_in_flight,
            endpoint_max_in_flight=self.endpoint_max_in_flight,
            environment=self.environment,
            address_policy=self.address_policy,
            time_scale=self.time_scale,
            time_origin=self.time_origin,
        )


class _ClaimPlan(NamedTuple):
    limit: int
    rooms: dict[str, int]
    default_room: int
    retry_room: int


class Dispatcher:
    """Claims due deliveries, has its transport send them, and records what happened."""

    def __init__(
        self,
        queue: DeliveryQueue,
        *,
        clock: Clock,
        config: DispatcherConfig | None = None,
        sender: HttpSender | None = None,
        rng: random.Random | None = None,
        owner: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        """``transport`` defaults to sending in this event loop, with ``sender`` (or a new
        HTTP sender) on ``clock``; give one or the other, not both."""
        if transport is not None and sender is not None:
            raise ValueError("a sender goes with the default transport; give one or the other")
        self.queue = queue
        self.clock = clock
        self.config = config or DispatcherConfig()
        self.transport: Transport = transport or LocalTransport(
            sender
            or HttpSender(
                max_connections=self.config.max_in_flight,
                address_policy=self.config.address_policy,
            ),
            clock=clock,
            config=self.config.courier,
        )
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.owner = owner or new_id("wrk")
        self._held: dict[int, Claim] = {}
        self._endpoint_held: Counter[str] = Counter()
        self._endpoints: dict[str, Endpoint] = {}
        #: Submitted to the transport and not reported yet: a subset of ``_held``.
        self._awaiting: dict[int, Assignment] = {}
        self._all_reported = asyncio.Event()
        self._all_reported.set()
        self._outcomes: list[Outcome] = []
        self._orphans: list[int] = []
        self._wake = asyncio.Event()
        self._outcome_ready = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._backlog = False
        #: Endpoints that had their full share at the last claim: more may be due for them.
        self._blocked: set[str] = set()
        #: Held while a claim is planned, run and taken: one at a time, so that two claims
        #: never both count the same room.
        self._claim_lock = asyncio.Lock()
        #: Held retries of other than money events (see ``max_retries_in_flight``).
        self._held_retries = 0
        #: Overload: non-core types are paused.
        self.overloaded = False
        self._backlog_checked_at = -math.inf
        self._wake_timer: asyncio.TimerHandle | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport and run the claim, record and heartbeat loops in the background."""
        await self.transport.open(self._on_reports)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="croupier-claim"),
            asyncio.create_task(self._record_loop(), name="croupier-record"),
            asyncio.create_task(self._heartbeat_loop(), name="croupier-heartbeat"),
        ]

    async def stop(self, drain_s: float = 15.0) -> None:
        """Stop claiming and sending, let in-flight sends finish for up to ``drain_s``,
        record, release.

        The claim and record loops are asked to finish, never cancelled mid-transaction, so
        nothing they committed goes unaccounted for. The transport is closed before the
        release, so nothing released is still being sent by this process.
        """
        self._stopping = True
        self._wake.set()
        claimer, recorder, heartbeat = self._loops or (None, None, None)
        if claimer is not None:
            await claimer
        # What is claimed but not yet being sent goes back at once; only sends already
        # under way get the drain time.
        self.transport.finish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_reported.wait(), timeout=drain_s)
        try:
            await self.transport.close()
        except Exception:
            log.exception("closing the transport failed")
        # Cut off without a report: these stay held and are released below.
        self._awaiting.clear()
        self._all_reported.set()
        if recorder is not None:
            self._outcome_ready.set()
            # Bounded: with the store gone, leases run out and the work is redone anyway.
            done, _ = await asyncio.wait({recorder}, timeout=max(5.0, drain_s))
            if not done:
                recorder.cancel()
                await asyncio.gather(recorder, return_exceptions=True)
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        self._loops = []
        try:
            await self._flush()
            unsent = list(self._held)
            if unsent:
                # Never sent (or cut off): make them due again at once for the next worker.
                await self.queue.release(self.owner, unsent)
        except Exception:
            log.exception("could not record the last outcomes; their leases will run out")
        finally:
            self._held.clear()
            self._endpoint_held.clear()
            self._held_retries = 0
            if self._wake_timer is not None:
                self._wake_timer.cancel()

    def notify(self) -> None:
        """Something may be due now (a publish, a retry, a replay): claim without waiting."""
        self._wake.set()

    async def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Deliver everything due by the clock, in the foreground; return how many attempts.

        For tests and tools: it claims, waits for every report, records, and repeats until
        nothing is due. Must not be mixed with :meth:`start`.
        """
        if self._loops:
            raise RuntimeError("run_until_idle() cannot run beside start()")
        await self.transport.open(self._on_reports)
        attempts = 0
        for _ in range(max_rounds):
            claimed = await self._claim_once()
            await self._all_reported.wait()
            attempts += len(self._outcomes)
            await self._flush()
            if claimed == 0 and not self._held:
                return attempts
        raise RuntimeError(f"still busy after {max_rounds} rounds")

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.05
        while not self._stopping:
            self._wake.clear()
            try:
                await self._claim_once()
                backoff = 0.05
            except Exception:
                log.exception("claim failed; retrying", backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._backlog and len(self._held) < self.config.held_limit:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.idle_poll_s)

    async def _claim_once(self) -> int:
        await self._check_backlog()
        async with self._claim_lock:
            plan = self._plan_claim(Counter())
            if plan is None:
                return 0
            claimed = await self._claim(plan)
            if (
                self.overloaded
                and not claimed.claims
                and not self._held
                and claimed.wake_at_ms is None
            ):
                self._drained()
                claimed = await self._claim(plan)
            return await self._take(claimed, plan)

    async def _claim(self, plan: _ClaimPlan) -> ClaimBatch:
        return await self.queue.claim(
            self.owner,
            now_ms=self.clock.now_ms(),
            limit=plan.limit,
            lease_ms=self.config.lease_ms,
            rooms=dict(plan.rooms),
            default_room=plan.default_room,
            retry_room=plan.retry_room,
            paused=self.overloaded,
            default_max_in_flight=self.config.endpoint_max_in_flight,
        )

    def _plan_claim(self, freed: Counter[str], freed_retries: int = 0) -> _ClaimPlan | None:
        """How much a claim may take now, once the deliveries counted in ``freed`` (per
        endpoint) are no longer held; None when there is no room or the dispatcher stops."""
        room = self.config.held_limit - (len(self._held) - freed.total())
        if room <= 0 or self._stopping:
            return None
        cap = self.config.endpoint_held_limit
        rooms = {
            ep: self.config.held_limit_of(self._endpoints.get(ep)) - (n - freed[ep])
            for ep, n in self._endpoint_held.items()
        }
        # Endpoints with their own concurrency, not holding anything yet.
        for ep, endpoint in self._endpoints.items():
            if ep not in rooms and endpoint.max_in_flight is not None:
                rooms[ep] = self.config.held_limit_of(endpoint)
        retry_room = self.config.max_retries_in_flight - (self._held_retries - freed_retries)
        return _ClaimPlan(min(self.config.claim_batch, room), rooms, cap, max(0, retry_room))

    async def _check_backlog(self) -> None:
        """Count the due backlog now and then: over the threshold, non-core event types
        pause until it is down to half of it. Publishing goes on; nothing is lost."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._backlog_checked_at < self.config.overload_check_s:
            return
        self._backlog_checked_at = loop.time()
        threshold = self.config.overload_backlog
        try:
            due = await self.queue.due_backlog(self.clock.now_ms(), at_most=threshold + 1)
        except Exception:
            log.exception("counting the due backlog failed")
            return
        if not self.overloaded and due > threshold:
            self.overloaded = True
            log.warning("overload: non-core event types paused", due_backlog=due)
        elif self.overloaded and due <= threshold // 2:
            self.overloaded = False
            log.info("overload over: non-core event types resume", due_backlog=due)

    def _drained(self) -> None:
        """A paused claim found no core work to take, nothing is held, and no endpoint
        waits for its rate limit or breaker: the core backlog has drained, whatever the
        paused types still keep waiting (they count in the backlog too, and would
        otherwise keep the pause on for ever)."""
        if self.overloaded:
            self.overloaded = False
            log.info("overload over: non-core event types resume")
            self._wake.set()

    def _wake_at(self, at_ms: int | None) -> None:
        """Claim again at ``at_ms`` (clock time), when an endpoint held back by its rate
        limit or breaker can take more."""
        if at_ms is None or self._stopping:
            return
        delay_s = max(0.0, (at_ms - self.clock.now_ms()) / 1000 / self.config.time_scale)
        if delay_s >= self.config.idle_poll_s:
            return  # the idle poll comes first
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        self._wake_timer = asyncio.get_running_loop().call_later(delay_s, self._wake.set)

    async def _take(self, claimed: ClaimBatch, plan: _ClaimPlan) -> int:
        """Hold what a claim leased and hand it to the transport."""
        rooms, cap = plan.rooms, plan.default_room
        # A full batch means more may be due right now: claim again as soon as there is room.
        self._backlog = claimed.more
        self._wake_at(claimed.wake_at_ms)
        claims = claimed.claims
        if claims:
            await self._refresh_endpoints(claims)
        batch: list[Assignment] = []
        for claim in claims:
            if claim.seq in self._held:
                # Its lease ran out while this process still sends it (a stalled heartbeat):
                # the claim just renewed the lease; sending it again would be a duplicate.
                continue
            self._held[claim.seq] = claim
            self._endpoint_held[claim.endpoint_id] += 1
            if _is_retry(claim):
                self._held_retries += 1
            endpoint = self._endpoints.get(claim.endpoint_id)
            if endpoint is None:
                # Deleted between the claim and the look-up: hand it back like a failed send.
                self._orphans.append(claim.seq)
                self._outcome_ready.set()
                continue
            assignment = (claim, endpoint)
            self._awaiting[claim.seq] = assignment
            batch.append(assignment)
        if batch:
            self._all_reported.clear()
            self.transport.submit(batch)
        # Endpoints that got all the room they were offered may have more due: see _flush.
        # (Judged by the offer, not by what they hold now: sends that ended during the
        # claim must not hide them.)
        taken = Counter(claim.endpoint_id for claim in claims)
        self._blocked = {ep for ep, room in rooms.items() if room <= 0} | {
            ep for ep, n in taken.items() if n >= rooms.get(ep, cap)
        }
        return len(batch)

    async def _refresh_endpoints(self, claims: Sequence[Claim]) -> None:
        stale = {
            c.endpoint_id
            for c in claims
            if (cached := self._endpoints.get(c.endpoint_id)) is None
            or cached.version != c.endpoint_version
        }
        if stale:
            self._endpoints.update(await self.queue.endpoints(sorted(stale)))

    # -- results -----------------------------------------------------------------------------

    def _on_reports(self, reports: Sequence[Report]) -> None:
        """Decide each reported attempt and queue its outcome for the recorder."""
        now = self.clock.now_ms()
        for seq, result, request_headers, attempt_id in reports:
            assignment = self._awaiting.pop(seq, None)
            if assignment is None:
                # Reported after stop() gave up on it: it is released, not recorded.
                continue
            claim, endpoint = assignment
            if result is None:
                self._orphans.append(seq)
                continue
            try:
                number = claim.attempts + 1
                decision = decide(
                    result,
                    schedule=endpoint.retry_schedule,
                    attempts_in_cycle=number - claim.cycle_start,
                    now_ms=now,
                    rng=self.rng,
                    policy=self.config.retry,
                )
                attempt = Attempt(
                    id=attempt_id,
                    delivery_id=claim.id,
                    number=number,
                    result=result,
                    request_headers=request_headers,
                )
            except Exception:
                # A bug must not strand the delivery: hand it back to be claimed again.
                log.exception("deciding an attempt failed", delivery_id=claim.id)
                self._orphans.append(seq)
                continue
            self._outcomes.append(Outcome(claim, attempt, decision))
        if not self._awaiting:
            self._all_reported.set()
        self._outcome_ready.set()

    # -- recording ---------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        failures = 0
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            try:
                await self._flush()
                failures = 0
                if self._stopping and not self._awaiting:
                    return
            except Exception:
                failures += 1
                log.exception("recording outcomes failed; retrying", failures=failures)
                if failures >= _MAX_RECORD_FAILURES:
                    self._forget_unrecorded()
                    failures = 0
                self._outcome_ready.set()
                await asyncio.sleep(min(0.05 * 2**failures, 5.0))

    def _forget_unrecorded(self) -> None:
        """Give up on outcomes the store keeps refusing. Their leases stay and run out, and
        the deliveries are sent again: a duplicate, never a loss."""
        log.error("dropping unrecordable outcomes", count=len(self._outcomes))
        for outcome in self._outcomes:
            self._unhold(outcome.claim.seq)
        self._outcomes.clear()
        self._wake.set()

    async def _flush(self) -> None:
        """Commit queued outcomes; until then their deliveries stay held and leased.

        When the room an outcome batch makes is wanted at once (see :meth:`_wants_claim`),
        and no claim is under way, the next claim rides in the same transaction as the
        outcomes: the claim and the record touch the same rows' pages, so one commit writes
        them once, and the claim saves its own trip to the store.
        """
        while self._outcomes or self._orphans:
            batch = self._outcomes[: self.config.flush_batch]
            orphans = self._orphans[:]
            freed = Counter(o.claim.endpoint_id for o in batch)
            plan = None
            if (
                batch
                and not orphans
                and self._loops
                and not self._claim_lock.locked()
                and self._wants_claim(batch, freed)
            ):
                plan = self._plan_claim(freed, sum(_is_retry(o.claim) for o in batch))
            if plan is not None:
                async with self._claim_lock:
                    claimed = await self.queue.record_and_claim(
                        self.owner,
                        batch,
                        self.clock.now_ms(),
                        limit=plan.limit,
                        lease_ms=self.config.lease_ms,
                        rooms=plan.rooms,
                        default_room=plan.default_room,
                        retry_room=plan.retry_room,
                        paused=self.overloaded,
                        default_max_in_flight=self.config.endpoint_max_in_flight,
                    )
                    del self._outcomes[: len(batch)]
                    for outcome in batch:
                        self._unhold(outcome.claim.seq)
                    self._stop_sending(claimed.stopped)
                    await self._take(claimed, plan)
                if self._backlog:
                    self._wake.set()
                continue
            if batch:
                stopped = await self.queue.record(self.owner, batch, self.clock.now_ms())
                del self._outcomes[: len(batch)]
                self._stop_sending(stopped)
            if orphans:
                await self.queue.release(self.owner, orphans)
                del self._orphans[: len(orphans)]
            for seq in [o.claim.seq for o in batch] + orphans:
                self._unhold(seq)
            if orphans or self._wants_claim(batch, Counter()):
                self._wake.set()

    def _stop_sending(self, endpoint_ids: frozenset[str]) -> None:
        """Endpoints whose breaker just opened, or that were just disabled: what is held
        for them and not yet being sent goes back unsent, to wait without spending an
        attempt (the claims leave them out from now on)."""
        if endpoint_ids:
            self.transport.recall(endpoint_ids)

    def _wants_claim(self, batch: Sequence[Outcome], freed: Counter[str]) -> bool:
        """Whether to claim again as soon as ``batch`` is recorded (its deliveries counted
        in ``freed`` are still held): only if there is work waiting for the room it makes
        (after a full claim, or for an endpoint that had its full share and is down to what
        it has in flight), or an ordered delivery finished and its successor may be due.
        Otherwise new work announces itself through notify(), and retries through the idle
        poll."""
        # Waiting for half of a full endpoint's share to free up makes each claim for it
        # worth its round trip, while the other half keeps its slots busy meanwhile.
        low = self.config.endpoint_held_limit // 2
        return (
            self._backlog
            or any(o.claim.ordered_key for o in batch)
            or any(self._endpoint_held[ep] - freed[ep] <= low for ep in self._blocked)
        )

    def _unhold(self, seq: int) -> None:
        claim = self._held.pop(seq, None)
        if claim is not None:
            if _is_retry(claim):
                self._held_retries -= 1
            self._endpoint_held[claim.endpoint_id] -= 1
            if self._endpoint_held[claim.endpoint_id] <= 0:
                del self._endpoint_held[claim.endpoint_id]

    async def _heartbeat_loop(self) -> None:
        interval = self.config.lease_ms / 3000 / self.config.time_scale
        while True:
            await asyncio.sleep(interval)
            if not self._held:
                continue
            try:
                await self.queue.renew(
                    self.owner, list(self._held), self.clock.now_ms() + self.config.lease_ms
                )
            except Exception:
                log.exception("renewing leases failed; retrying at the next beat")


def _is_retry(claim: Claim) -> bool:
    """A retry that counts against ``max_retries_in_flight``: money events never do."""
    return claim.attempts > claim.cycle_start and not is_money(claim.event.type)
