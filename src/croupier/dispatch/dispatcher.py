"""The delivery engine: claim due deliveries, sign and send them, record what happened.

Three loops share one asyncio event loop:

* the claimer leases due deliveries in batches, never more than the global and per-endpoint
  limits allow, and starts one task per delivery;
* each task waits for its endpoint's slot, sends, and queues the outcome;
* the recorder commits queued outcomes in one transaction per batch ("group commit"): under
  load many outcomes share a commit; at rest each commits at once, so latency stays low.

A heartbeat renews the leases of everything held. Every piece of state here can be rebuilt
from the store, so a crash loses nothing: leases run out and the deliveries become due again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from croupier import __version__
from croupier.dispatch.sender import HttpSender
from croupier.domain.clock import Clock
from croupier.domain.deliveries import Attempt, decide
from croupier.domain.endpoints import Endpoint
from croupier.domain.envelope import render_envelope
from croupier.domain.events import Event
from croupier.domain.ids import new_id
from croupier.domain.retry import RetryPolicy
from croupier.domain.signing import Signer, signer_for
from croupier.services.ports import Claim, DeliveryQueue, Outcome

log = structlog.get_logger("croupier.dispatch")

USER_AGENT = f"Croupier-Webhooks/{__version__}"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_MAX_RECORD_FAILURES = 10


@dataclass(frozen=True)
class DispatcherConfig:
    claim_batch: int = 500
    max_in_flight: int = 512
    endpoint_max_in_flight: int = 32
    lease_ms: int = 60_000
    idle_poll_s: float = 1.0
    flush_batch: int = 1000
    environment: str = "production"
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def held_limit(self) -> int:
        """Deliveries held in memory at once: enough to keep every slot busy between claims."""
        return 2 * self.max_in_flight

    @property
    def endpoint_held_limit(self) -> int:
        return 2 * self.endpoint_max_in_flight


class Dispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        *,
        clock: Clock,
        config: DispatcherConfig | None = None,
        sender: HttpSender | None = None,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.config = config or DispatcherConfig()
        self.sender = sender or HttpSender(max_connections=self.config.max_in_flight)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.owner = owner or new_id("wrk")
        self._held: dict[int, Claim] = {}
        self._endpoint_held: Counter[str] = Counter()
        self._endpoint_slots: dict[str, asyncio.Semaphore] = {}
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        self._endpoints: dict[str, Endpoint] = {}
        self._signers: dict[str, tuple[int, Signer]] = {}
        self._outcomes: list[Outcome] = []
        self._orphans: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._outcome_ready = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._backlog = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open connections and run the claim, record and heartbeat loops in the background."""
        await self.sender.open()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="croupier-claim"),
            asyncio.create_task(self._record_loop(), name="croupier-record"),
            asyncio.create_task(self._heartbeat_loop(), name="croupier-heartbeat"),
        ]

    async def stop(self, drain_s: float = 15.0) -> None:
        """Stop claiming, let in-flight sends finish for up to ``drain_s``, record, release.

        The claim and record loops are asked to finish, never cancelled mid-transaction, so
        nothing they committed goes unaccounted for.
        """
        self._stopping = True
        self._wake.set()
        claimer, recorder, heartbeat = self._loops or (None, None, None)
        if claimer is not None:
            await claimer
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=drain_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
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
            await self.sender.close()

    def notify(self) -> None:
        """Something may be due now (a publish, a retry, a replay): claim without waiting."""
        self._wake.set()

    async def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Deliver everything due by the clock, in the foreground; return how many attempts.

        For tests and tools: it claims, waits for every send, records, and repeats until
        nothing is due. Must not be mixed with :meth:`start`.
        """
        if self._loops:
            raise RuntimeError("run_until_idle() cannot run beside start()")
        await self.sender.open()
        attempts = 0
        for _ in range(max_rounds):
            claimed = await self._claim_once()
            while self._tasks:
                await asyncio.wait(set(self._tasks))
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
        room = self.config.held_limit - len(self._held)
        if room <= 0 or self._stopping:
            return 0
        limit = min(self.config.claim_batch, room)
        cap = self.config.endpoint_held_limit
        full = [ep for ep, n in self._endpoint_held.items() if n >= cap]
        claims = await self.queue.claim(
            self.owner,
            now_ms=self.clock.now_ms(),
            limit=limit,
            lease_ms=self.config.lease_ms,
            exclude_endpoints=full,
        )
        # A full batch means more may be due right now: claim again as soon as there is room.
        self._backlog = len(claims) == limit
        if not claims:
            return 0
        await self._refresh_endpoints(claims)
        excess: list[int] = []
        started = 0
        for claim in claims:
            if claim.seq in self._held:
                # Its lease ran out while this process still sends it (a stalled heartbeat):
                # the claim just renewed the lease; sending it again would be a duplicate.
                continue
            if self._endpoint_held[claim.endpoint_id] >= cap:
                excess.append(claim.seq)
                continue
            self._held[claim.seq] = claim
            self._endpoint_held[claim.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(claim))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        if excess:
            # One endpoint filled its share; hand the rest back so others are not starved.
            await self.queue.release(self.owner, excess)
        return started

    async def _refresh_endpoints(self, claims: Sequence[Claim]) -> None:
        stale = {
            c.endpoint_id
            for c in claims
            if (cached := self._endpoints.get(c.endpoint_id)) is None
            or cached.version != c.endpoint_version
        }
        if stale:
            self._endpoints.update(await self.queue.endpoints(sorted(stale)))

    # -- sending -----------------------------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        try:
            endpoint = self._endpoints[claim.endpoint_id]
            slot = self._endpoint_slots.get(endpoint.id)
            if slot is None:
                slot = asyncio.Semaphore(self.config.endpoint_max_in_flight)
                self._endpoint_slots[endpoint.id] = slot
            async with slot, self._slots:
                now = self.clock.now_ms()
                number = claim.attempts + 1
                body = render_envelope(
                    claim.event,
                    attempt=number,
                    delivered_at_ms=now,
                    environment=self.config.environment,
                )
                headers = self._headers(endpoint, claim.event, body, now)
                result = await self.sender.post(
                    endpoint.url, body, headers, timeout_ms=endpoint.timeout_ms, started_at_ms=now
                )
            decision = decide(
                result,
                schedule=endpoint.retry_schedule,
                attempts_in_cycle=number - claim.cycle_start,
                now_ms=self.clock.now_ms(),
                rng=self.rng,
                policy=self.config.retry,
            )
            attempt = Attempt(
                id=new_id("att", now_ms=now),
                delivery_id=claim.id,
                number=number,
                result=result,
                request_headers=_redact(headers, endpoint),
            )
            self._outcomes.append(Outcome(claim, attempt, decision))
            self._outcome_ready.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not strand the delivery: hand it back to be claimed again.
            log.exception("delivery task failed", delivery_id=claim.id)
            self._orphans.append(claim.seq)
            self._outcome_ready.set()

    def _headers(
        self, endpoint: Endpoint, event: Event, body: bytes, now_ms: int
    ) -> dict[str, str]:
        headers = dict(endpoint.headers)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        trace_id = event.trace_id or event.id
        headers["X-Trace-Id"] = trace_id
        headers["traceparent"] = f"00-{_trace_hex(trace_id)}-{os.urandom(8).hex()}-01"
        headers.update(self._signer(endpoint).sign(event.id, now_ms // 1000, body))
        return headers

    def _signer(self, endpoint: Endpoint) -> Signer:
        cached = self._signers.get(endpoint.id)
        if cached is not None and cached[0] == endpoint.version:
            return cached[1]
        signer = signer_for(endpoint.dialect, [endpoint.secret])
        self._signers[endpoint.id] = (endpoint.version, signer)
        return signer

    # -- recording ---------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        failures = 0
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            try:
                await self._flush()
                failures = 0
                if self._stopping and not self._tasks:
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
        """Commit queued outcomes; until then their deliveries stay held and leased."""
        while self._outcomes or self._orphans:
            batch = self._outcomes[: self.config.flush_batch]
            orphans = self._orphans[:]
            if batch:
                await self.queue.record(self.owner, batch, self.clock.now_ms())
                del self._outcomes[: len(batch)]
            if orphans:
                await self.queue.release(self.owner, orphans)
                del self._orphans[: len(orphans)]
            for seq in [o.claim.seq for o in batch] + orphans:
                self._unhold(seq)
            # Claim again now only if there is work waiting for the room just made, or an
            # ordered delivery finished and its successor may be due; otherwise new work
            # announces itself through notify(), and retries through the idle poll.
            if self._backlog or orphans or any(o.claim.ordered_key for o in batch):
                self._wake.set()

    def _unhold(self, seq: int) -> None:
        claim = self._held.pop(seq, None)
        if claim is not None:
            self._endpoint_held[claim.endpoint_id] -= 1
            if self._endpoint_held[claim.endpoint_id] <= 0:
                del self._endpoint_held[claim.endpoint_id]

    async def _heartbeat_loop(self) -> None:
        interval = self.config.lease_ms / 3000
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


def _trace_hex(trace_id: str) -> str:
    """A W3C trace id (32 hex digits): the trace id itself if it is one, else its digest."""
    lowered = trace_id.lower()
    if _HEX32.match(lowered) and lowered != "0" * 32:
        return lowered
    return hashlib.sha256(trace_id.encode()).hexdigest()[:32]


def _redact(headers: dict[str, str], endpoint: Endpoint) -> dict[str, str]:
    """What an attempt keeps of the request: the endpoint's own header values may be secrets."""
    return {k: "[redacted]" if k in endpoint.headers else v for k, v in headers.items()}
