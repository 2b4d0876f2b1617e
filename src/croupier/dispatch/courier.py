"""The per-delivery work of sending: render the envelope, sign it, POST it, report back.

A :class:`Courier` runs wherever the sending happens: in the dispatcher's own event loop
(:class:`~croupier.dispatch.transport.LocalTransport`) or in a sender child process
(:mod:`croupier.dispatch.child`). It knows nothing of the store: it takes jobs, sends them
within the global and per-endpoint concurrency limits, and hands back reports in batches.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from croupier import __version__
from croupier.dispatch.sender import HttpSender
from croupier.domain.clock import Clock
from croupier.domain.deliveries import AttemptResult
from croupier.domain.endpoints import Endpoint
from croupier.domain.envelope import render_data, render_envelope
from croupier.domain.events import Event
from croupier.domain.ids import new_id, random_bytes
from croupier.domain.network import AddressPolicy
from croupier.domain.signing import DEFAULT_HEADER_PREFIX, Signer, signer_for

log = structlog.get_logger("croupier.dispatch")

USER_AGENT = f"Croupier-Webhooks/{__version__}"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class CourierConfig:
    """What every courier of a dispatcher shares: its limits and the envelope's environment."""

    max_in_flight: int = 512
    endpoint_max_in_flight: int = 16
    environment: str = "production"
    #: Which addresses the HTTP client may connect to (the SSRF guard's connect-time half).
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    #: Tests and drills: the dispatcher's clock runs this much faster, from ``time_origin``
    #: (see ``ScaledClock.origin``); a sender process must send on the same clock.
    time_scale: float = 1.0
    time_origin: tuple[int, int] | None = None


class EndpointSpec(NamedTuple):
    """What sending needs of an endpoint; a courier learns it once per version."""

    id: str
    version: int
    url: str
    headers: Mapping[str, str]
    timeout_ms: int
    dialect: str
    #: Newest first; each one signs, so a receiver that knows any of them accepts.
    secrets: tuple[str, ...]
    header_prefix: str = DEFAULT_HEADER_PREFIX
    format: str = "envelope"
    #: When ``secrets[1:]`` (the secret before a rotation) stop signing; None: they never do.
    previous_until_ms: int | None = None
    #: Concurrent requests at most; None: the courier's ``endpoint_max_in_flight``.
    max_in_flight: int | None = None

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointSpec:
        previous = endpoint.previous_secret
        return cls(
            endpoint.id,
            endpoint.version,
            endpoint.url,
            dict(endpoint.headers),
            endpoint.timeout_ms,
            endpoint.dialect,
            (endpoint.secret,) if previous is None else (endpoint.secret, previous),
            endpoint.header_prefix,
            endpoint.format,
            endpoint.previous_secret_until_ms if previous is not None else None,
            endpoint.max_in_flight,
        )


class Job(NamedTuple):
    """One attempt to send: the delivery, which attempt it is, and where to."""

    seq: int
    delivery_id: str
    attempt: int
    endpoint_id: str
    endpoint_version: int
    event: Event


class Report(NamedTuple):
    """How a job ended. ``result`` is None when it was never sent (or its fate is unknown):
    the delivery is then released, to be claimed and sent again."""

    seq: int
    result: AttemptResult | None
    #: The request's headers, with the endpoint's own header values redacted.
    request_headers: Mapping[str, str]
    #: The attempt's id, made where it was sent (a sender has CPU to spare for it).
    attempt_id: str = ""


class Courier:
    """Sends jobs within the global and per-endpoint limits, and reports how each ended.

    Each endpoint has a queue and up to ``endpoint_max_in_flight`` workers that take jobs
    from it, with at most ``max_in_flight`` workers in all. Workers, rather than a task and
    two semaphores per job, because this is the sender's hot path: the per-job task and the
    semaphores took a tenth of its CPU. When every slot is taken, an endpoint with work
    waits its turn in arrival order, and a worker hands its slot over after each job
    while one waits, so no endpoint keeps the others out.

    Reports of jobs that end in the same loop iteration go to ``on_reports`` together, once
    that iteration is over: a busy courier hands back few, large batches.
    """

    def __init__(
        self,
        sender: HttpSender,
        *,
        clock: Clock,
        config: CourierConfig,
        on_reports: Callable[[list[Report]], None],
    ) -> None:
        self._sender = sender
        self._clock = clock
        self._config = config
        self._on_reports = on_reports
        self._endpoints: dict[str, tuple[EndpointSpec, _Signers]] = {}
        self._queues: dict[str, deque[tuple[Job, EndpointSpec, _Signers]]] = {}
        self._workers: Counter[str] = Counter()
        self._busy = 0
        #: Endpoints with queued jobs that found every slot taken, in arrival order.
        self._waiting: dict[str, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: list[Report] = []
        self._flush_scheduled = False

    def learn(self, specs: Iterable[EndpointSpec]) -> None:
        """Remember endpoints (their newest version replaces any older one)."""
        for spec in specs:
            try:
                self._endpoints[spec.id] = (spec, _Signers.of(spec))
            except Exception:
                # Its jobs are then reported unsent; the error names the endpoint, no secret.
                log.exception("cannot sign for endpoint", endpoint_id=spec.id)

    def submit(self, jobs: Iterable[Job]) -> None:
        """Start sending ``jobs``; each is reported once, whatever happens to it."""
        touched: set[str] = set()
        for job in jobs:
            known = self._endpoints.get(job.endpoint_id)
            if known is None or known[0].version != job.endpoint_version:
                log.error(
                    "job for an endpoint version the courier does not know",
                    delivery_id=job.delivery_id,
                    endpoint_id=job.endpoint_id,
                    endpoint_version=job.endpoint_version,
                )
                self._report(Report(job.seq, None, {}))
                continue
            queue = self._queues.get(job.endpoint_id)
            if queue is None:
                queue = self._queues[job.endpoint_id] = deque()
            queue.append((job, *known))
            touched.add(job.endpoint_id)
        for endpoint_id in touched:
            self._staff(endpoint_id)

    def finish(self) -> None:
        """Start nothing new: jobs still queued are reported unsent at once (they will be
        claimed again), and those in flight finish and are reported as usual."""
        queued = [job.seq for queue in self._queues.values() for job, _, _ in queue]
        # Workers hold their queue itself: empty it, not just the map.
        for queue in self._queues.values():
            queue.clear()
        self._queues.clear()
        self._waiting.clear()
        for seq in queued:
            self._report(Report(seq, None, {}))

    def recall(self, endpoint_ids: Iterable[str]) -> None:
        """Send no more of these endpoints' jobs (their breaker opened, or they were
        disabled): the queued ones are reported unsent at once; those in flight finish."""
        for endpoint_id in endpoint_ids:
            queue = self._queues.get(endpoint_id)
            self._waiting.pop(endpoint_id, None)
            if not queue:
                continue
            seqs = [job.seq for job, _, _ in queue]
            # Workers hold the queue itself: empty it, not just the map.
            queue.clear()
            for seq in seqs:
                self._report(Report(seq, None, {}))

    async def cancel(self) -> None:
        """Cut off every job still running or queued (they are not reported) and hand back
        the reports that are ready, at once: nothing is reported after this returns."""
        self._queues.clear()
        self._waiting.clear()
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._flush()

    def _staff(self, endpoint_id: str) -> None:
        """Start workers for the endpoint's queue, as far as the limits allow."""
        queue = self._queues.get(endpoint_id)
        if not queue:
            return
        spec = self._endpoints[endpoint_id][0] if endpoint_id in self._endpoints else None
        cap = self._config.endpoint_max_in_flight
        if spec is not None and spec.max_in_flight is not None:
            cap = spec.max_in_flight
        while len(queue) > self._workers[endpoint_id] and self._workers[endpoint_id] < cap:
            if self._busy >= self._config.max_in_flight:
                self._waiting[endpoint_id] = None
                return
            self._workers[endpoint_id] += 1
            self._busy += 1
            task = asyncio.create_task(self._work(endpoint_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(
        self, endpoint_id: str, queue: deque[tuple[Job, EndpointSpec, _Signers]]
    ) -> None:
        try:
            while queue:
                await self._send(*queue.popleft())
                if self._waiting and endpoint_id not in self._waiting:
                    # Others wait for a slot: take turns, and queue up behind them.
                    if queue:
                        self._waiting[endpoint_id] = None
                    break
        finally:
            self._workers[endpoint_id] -= 1
            self._busy -= 1
            if not self._workers[endpoint_id]:
                del self._workers[endpoint_id]
                if not queue and self._queues.get(endpoint_id) is queue:
                    del self._queues[endpoint_id]
            self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to endpoints waiting for one, first come first served."""
        while self._waiting and self._busy < self._config.max_in_flight:
            endpoint_id = next(iter(self._waiting))
            del self._waiting[endpoint_id]
            self._staff(endpoint_id)

    async def _send(self, job: Job, spec: EndpointSpec, signers: _Signers) -> None:
        try:
            now = self._clock.now_ms()
            if spec.format == "data":
                body = render_data(job.event)
            else:
                body = render_envelope(
                    job.event,
                    attempt=job.attempt,
                    delivered_at_ms=now,
                    environment=self._config.environment,
                )
            headers = build_headers(spec, signers.at(now), job.event, body, now)
            result = await self._sender.post(
                spec.url, body, headers, timeout_ms=spec.timeout_ms, started_at_ms=now
            )
            report = Report(job.seq, result, redact(headers, spec), new_id("att", now_ms=now))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not strand the delivery: report it unsent, so it is claimed again.
            log.exception("delivery task failed", delivery_id=job.delivery_id)
            report = Report(job.seq, None, {})
        self._report(report)

    def _report(self, report: Report) -> None:
        self._ready.append(report)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._ready:
            ready, self._ready = self._ready, []
            self._on_reports(ready)


class _Signers(NamedTuple):
    """An endpoint's signer with all its secrets, and with the newest alone for when the
    rotation's grace window has passed (a courier may keep a spec for longer than that)."""

    every: Signer
    newest: Signer
    previous_until_ms: int | None

    @classmethod
    def of(cls, spec: EndpointSpec) -> _Signers:
        every = signer_for(spec.dialect, spec.secrets, header_prefix=spec.header_prefix)
        if len(spec.secrets) == 1:
            return cls(every, every, None)
        newest = signer_for(spec.dialect, spec.secrets[:1], header_prefix=spec.header_prefix)
        return cls(every, newest, spec.previous_until_ms or 0)

    def at(self, now_ms: int) -> Signer:
        until = self.previous_until_ms
        return self.every if until is None or now_ms < until else self.newest


def build_headers(
    spec: EndpointSpec, signer: Signer, event: Event, body: bytes, now_ms: int
) -> dict[str, str]:
    """The request's headers: the endpoint's own, then croupier's, then the signature."""
    headers = dict(spec.headers)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    trace_id = event.trace_id or event.id
    headers["X-Trace-Id"] = trace_id
    headers["traceparent"] = f"00-{_trace_hex(trace_id)}-{_span_id()}-01"
    headers.update(signer.sign(event.id, now_ms // 1000, body))
    return headers


def redact(headers: dict[str, str], spec: EndpointSpec) -> dict[str, str]:
    """What an attempt keeps of the request: the endpoint's own header values may be secrets,
    and so is a bearer endpoint's key. Without either it is ``headers`` itself, which
    nothing changes once sent."""
    if spec.dialect == "bearer":
        return {
            k: "[redacted]" if k in spec.headers or k == "Authorization" else v
            for k, v in headers.items()
        }
    if not spec.headers:
        return headers
    return {k: "[redacted]" if k in spec.headers else v for k, v in headers.items()}


def _span_id() -> str:
    """A W3C parent id: 16 hex digits, never all zeros."""
    span = random_bytes(8).hex()
    return span if span != "0" * 16 else "0" * 15 + "1"


@functools.lru_cache(maxsize=4096)
def _trace_hex(trace_id: str) -> str:
    """A W3C trace id (32 hex digits): the trace id itself if it is one, else its digest.
    Remembered: an event's trace id comes back once for each of its endpoints."""
    lowered = trace_id.lower()
    if _HEX32.match(lowered) and lowered != "0" * 32:
        return lowered
    return hashlib.sha256(trace_id.encode()).hexdigest()[:32]
