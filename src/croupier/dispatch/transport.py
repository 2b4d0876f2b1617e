"""How the dispatcher hands claimed deliveries to a courier and gets reports back.

:class:`LocalTransport` runs the courier in the dispatcher's own event loop.
:class:`ProcessTransport` runs it in a sender child process, so that rendering, signing and
the HTTP client use a core of their own while the parent keeps the API and the store.
:class:`SenderPool` runs several such children side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import socket
import sys
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import structlog

from croupier.dispatch.courier import Courier, CourierConfig, EndpointSpec, Job, Report
from croupier.dispatch.sender import HttpSender
from croupier.dispatch.wire import (
    FINISH,
    RECALL,
    FrameProtocol,
    JobsMessage,
    WireEndpoint,
    WireJob,
    endpoint_to_wire,
    jobs_to_wire,
    reports_from_wire,
)
from croupier.domain.clock import Clock
from croupier.domain.endpoints import Endpoint
from croupier.services.ports import Claim

log = structlog.get_logger("croupier.dispatch")

#: Called with every batch of reports; never after the transport's ``close`` has returned.
OnReports = Callable[[Sequence[Report]], None]
#: A claimed delivery and the endpoint it goes to.
Assignment = tuple[Claim, Endpoint]

CHILD_MODULE = "croupier.dispatch.child"
_RESTART_FIRST_S = 0.1
_RESTART_MAX_S = 5.0
#: A child that ran at least this long died of something new: restart it without delay.
_STABLE_S = 30.0
_EXIT_WAIT_S = 5.0


class Transport(Protocol):
    """Carries jobs to a courier and its reports back to the dispatcher."""

    async def open(self, on_reports: OnReports) -> None:
        """Get ready to send; a second call while open does nothing."""
        ...

    def submit(self, batch: Sequence[Assignment]) -> None:
        """Send each claim (one attempt); every one is reported once, unless ``close`` cuts
        it off first."""
        ...

    def finish(self) -> None:
        """Start no more sends: what is not yet being sent is reported unsent; what is
        finishes and is reported as usual. For a graceful stop, before ``close``."""
        ...

    def recall(self, endpoint_ids: Collection[str]) -> None:
        """Send no more of these endpoints' jobs: those not yet being sent are reported
        unsent; those being sent finish and are reported as usual."""
        ...

    async def close(self) -> None:
        """Cut off whatever is still being sent, deliver the reports that are ready, and
        stop. Closing a transport that is not open does nothing; it may be opened again."""
        ...


def job_of(claim: Claim, endpoint: Endpoint) -> Job:
    return Job(claim.seq, claim.id, claim.attempts + 1, endpoint.id, endpoint.version, claim.event)


class _EndpointBook:
    """Which endpoint versions a courier has been told about, so each is told once."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}

    def news(self, batch: Sequence[Assignment]) -> list[EndpointSpec]:
        fresh: list[EndpointSpec] = []
        for _, endpoint in batch:
            if self._versions.get(endpoint.id) != endpoint.version:
                self._versions[endpoint.id] = endpoint.version
                fresh.append(EndpointSpec.of(endpoint))
        return fresh

    def forget(self) -> None:
        self._versions.clear()


class LocalTransport:
    """The courier in the dispatcher's own event loop, on the dispatcher's clock.

    The clock matters to tests: with a manual clock, ``delivered_at`` and the signature's
    timestamp follow the clock the retries are scheduled on.
    """

    def __init__(self, sender: HttpSender, *, clock: Clock, config: CourierConfig) -> None:
        self._sender = sender
        self._clock = clock
        self._config = config
        self._courier: Courier | None = None
        self._book = _EndpointBook()

    async def open(self, on_reports: OnReports) -> None:
        if self._courier is None:
            await self._sender.open()
            self._courier = Courier(
                self._sender, clock=self._clock, config=self._config, on_reports=on_reports
            )
            self._book.forget()

    def submit(self, batch: Sequence[Assignment]) -> None:
        if self._courier is None:
            raise RuntimeError("LocalTransport.open() must be called first")
        self._courier.learn(self._book.news(batch))
        self._courier.submit([job_of(claim, endpoint) for claim, endpoint in batch])

    def finish(self) -> None:
        if self._courier is not None:
            self._courier.finish()

    def recall(self, endpoint_ids: Collection[str]) -> None:
        if self._courier is not None:
            self._courier.recall(endpoint_ids)

    async def close(self) -> None:
        courier, self._courier = self._courier, None
        if courier is not None:
            await courier.cancel()
        await self._sender.close()


class _Child:
    """One running sender process and the parent's end of its socketpair."""

    def __init__(self, proc: asyncio.subprocess.Process, owner: ProcessTransport) -> None:
        self.proc = proc
        self.protocol = FrameProtocol(
            functools.partial(owner._received, self), functools.partial(owner._ended, self)
        )
        self.started = asyncio.get_running_loop().time()
        #: Jobs sent to this child and not reported yet.
        self.outstanding: set[int] = set()
        self.book = _EndpointBook()
        self.ended = asyncio.Event()


class ProcessTransport:
    """The courier in a child process (``python -m croupier.dispatch.child``), on a socketpair.

    The child sends with uvloop and the system clock. If it dies, every job it had not
    reported is reported unsent (the dispatcher releases it, to be claimed again), and a new
    child starts after a backoff; jobs submitted meanwhile wait for it. The child ends when
    its end of the socket reaches end-of-stream: at :meth:`close`, or at once when the
    parent dies, however it dies.
    """

    def __init__(self, config: CourierConfig, *, log_level: str = "info") -> None:
        self._config = config
        self._log_level = log_level
        self._on_reports: OnReports | None = None
        self._child: _Child | None = None
        self._waiting: list[Assignment] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._returncode: int | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id; None while there is none."""
        return self._child.proc.pid if self._child is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last child that ended (negative: killed by that signal)."""
        return self._returncode

    async def open(self, on_reports: OnReports) -> None:
        if self._supervisor is not None:
            return
        self._on_reports = on_reports
        self._closing = False
        child = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(child), name="croupier-senders")

    def submit(self, batch: Sequence[Assignment]) -> None:
        if self._on_reports is None:
            raise RuntimeError("ProcessTransport.open() must be called first")
        if self._child is None:
            # Between a death and its restart: these go to the next child.
            self._waiting.extend(batch)
            return
        self._send(self._child, batch)

    def finish(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting and self._on_reports is not None:
            self._on_reports([Report(claim.seq, None, {}) for claim, _ in waiting])
        if self._child is not None:
            self._child.protocol.send(FINISH)

    def recall(self, endpoint_ids: Collection[str]) -> None:
        recalled = [a for a in self._waiting if a[1].id in endpoint_ids]
        if recalled:
            self._waiting = [a for a in self._waiting if a[1].id not in endpoint_ids]
            if self._on_reports is not None:
                self._on_reports([Report(claim.seq, None, {}) for claim, _ in recalled])
        if self._child is not None:
            self._child.protocol.send((RECALL, sorted(endpoint_ids)))

    async def close(self) -> None:
        self._closing = True
        self._waiting.clear()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        child, self._child = self._child, None
        if child is not None:
            await self._retire(child)
        self._on_reports = None

    # -- the child's life --------------------------------------------------------------------

    def _clock_args(self) -> list[str]:
        """The scaled clock the child must send on, if the dispatcher's is one."""
        origin = self._config.time_origin
        if self._config.time_scale == 1 or origin is None:
            return []
        return [
            *("--time-scale", repr(self._config.time_scale)),
            *("--time-origin", f"{origin[0]}:{origin[1]}"),
        ]

    async def _spawn(self) -> _Child:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                CHILD_MODULE,
                "--fd",
                str(theirs.fileno()),
                "--max-in-flight",
                str(self._config.max_in_flight),
                "--endpoint-max-in-flight",
                str(self._config.endpoint_max_in_flight),
                "--environment",
                self._config.environment,
                "--allow-networks",
                self._config.address_policy.allow_spec,
                *(["--allow-loopback"] if self._config.address_policy.allow_loopback else []),
                "--log-level",
                self._log_level,
                *self._clock_args(),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            # Only the child may hold its end: the parent's copy would hide the child's death.
            theirs.close()
        child = _Child(proc, self)
        try:
            await asyncio.get_running_loop().create_unix_connection(
                lambda: child.protocol, sock=ours
            )
        except BaseException:
            ours.close()
            proc.kill()
            await proc.wait()
            raise
        self._child = child
        log.info("sender process started", pid=proc.pid)
        return child

    async def _supervise(self, child: _Child) -> None:
        delay = _RESTART_FIRST_S
        while True:
            await child.ended.wait()
            code = await self._reap(child)
            lived = asyncio.get_running_loop().time() - child.started
            if lived >= _STABLE_S:
                delay = _RESTART_FIRST_S
            log.error(
                "sender process died; its unreported deliveries go back to the queue",
                pid=child.proc.pid,
                exit_code=code,
                restart_in_s=delay,
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESTART_MAX_S)
                try:
                    child = await self._spawn()
                    break
                except Exception:
                    log.exception("could not start a sender process", retry_in_s=delay)
            waiting, self._waiting = self._waiting, []
            if waiting:
                self._send(child, waiting)

    async def _retire(self, child: _Child) -> None:
        """End a child on purpose: no more jobs; take its last reports; wait for its exit."""
        child.protocol.write_eof()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.ended.wait(), _EXIT_WAIT_S)
        code = await self._reap(child)
        if code != 0:
            log.warning("sender process ended badly", pid=child.proc.pid, exit_code=code)

    async def _reap(self, child: _Child) -> int:
        child.protocol.close()
        try:
            code = await asyncio.wait_for(child.proc.wait(), _EXIT_WAIT_S)
        except TimeoutError:
            log.warning("sender process did not exit; killing it", pid=child.proc.pid)
            child.proc.kill()
            code = await child.proc.wait()
        await child.protocol.closed
        self._returncode = code
        return code

    # -- traffic -----------------------------------------------------------------------------

    def _send(self, child: _Child, batch: Sequence[Assignment]) -> None:
        endpoints: list[WireEndpoint] = [endpoint_to_wire(s) for s in child.book.news(batch)]
        jobs: list[WireJob] = jobs_to_wire([job_of(claim, endpoint) for claim, endpoint in batch])
        child.outstanding.update(claim.seq for claim, _ in batch)
        message: JobsMessage = (endpoints, jobs)
        child.protocol.send(message)

    def _received(self, child: _Child, message: Any) -> None:
        reports = reports_from_wire(message)
        for report in reports:
            child.outstanding.discard(report.seq)
        if self._on_reports is not None:
            self._on_reports(reports)

    def _ended(self, child: _Child) -> None:
        """The child's stream ended: nothing more will be reported by it."""
        child.ended.set()
        if self._child is child:
            self._child = None
        if self._closing:
            return
        lost = sorted(child.outstanding)
        child.outstanding.clear()
        if lost and self._on_reports is not None:
            # Sent or not, nobody knows: at-least-once says send again.
            self._on_reports([Report(seq, None, {}) for seq in lost])


class SenderPool:
    """Several sender child processes, each one a :class:`ProcessTransport`.

    One child runs short of CPU long before the main process does: with two, a two-core
    machine delivered 26-35% more in the drain bench and 5-10% more while publishing. The
    global limit is shared out (each child may have ``max_in_flight // processes`` requests
    in flight); the per-endpoint limit holds as it is, because an endpoint's jobs all go to
    one child at a time. An endpoint with nothing outstanding goes to the child with the
    fewest jobs outstanding, so the work spreads by load, not by the number of endpoints.

    Each child lives, dies and is replaced on its own, as a :class:`ProcessTransport`
    describes: when one dies, only its unreported jobs go back to the queue, and new work
    goes to the children still running until its replacement is up.
    """

    def __init__(self, config: CourierConfig, *, processes: int, log_level: str = "info") -> None:
        if processes < 1:
            raise ValueError("a sender pool needs at least one process")
        count = min(processes, config.max_in_flight)
        share = dataclasses.replace(config, max_in_flight=config.max_in_flight // count)
        self._parts = [ProcessTransport(share, log_level=log_level) for _ in range(count)]
        self._on_reports: OnReports | None = None
        #: The child each endpoint's jobs go to while it has any outstanding.
        self._home: dict[str, int] = {}
        #: Outstanding jobs: their endpoint, per endpoint, and per child.
        self._endpoint_of: dict[int, str] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._per_part = [0] * count

    @property
    def processes(self) -> int:
        return len(self._parts)

    @property
    def pids(self) -> list[int]:
        """The running children's process ids (a child being replaced is left out)."""
        return [pid for part in self._parts if (pid := part.pid) is not None]

    async def open(self, on_reports: OnReports) -> None:
        self._on_reports = on_reports
        await asyncio.gather(
            *(part.open(functools.partial(self._reported, i)) for i, part in enumerate(self._parts))
        )

    def submit(self, batch: Sequence[Assignment]) -> None:
        if self._on_reports is None:
            raise RuntimeError("SenderPool.open() must be called first")
        groups: dict[int, list[Assignment]] = {}
        for assignment in batch:
            claim, endpoint = assignment
            home = self._home.get(endpoint.id)
            if home is None:
                home = self._home[endpoint.id] = self._least_busy()
            self._endpoint_of[claim.seq] = endpoint.id
            self._per_endpoint[endpoint.id] += 1
            self._per_part[home] += 1
            groups.setdefault(home, []).append(assignment)
        for home, jobs in groups.items():
            self._parts[home].submit(jobs)

    def finish(self) -> None:
        for part in self._parts:
            part.finish()

    def recall(self, endpoint_ids: Collection[str]) -> None:
        for part in self._parts:
            part.recall(endpoint_ids)

    async def close(self) -> None:
        await asyncio.gather(*(part.close() for part in self._parts))
        self._on_reports = None
        self._home.clear()
        self._endpoint_of.clear()
        self._per_endpoint.clear()
        self._per_part = [0] * len(self._parts)

    def _least_busy(self) -> int:
        """The child with the fewest jobs outstanding, among those running: one being
        replaced would only hold the jobs until it is back."""
        running = [i for i, part in enumerate(self._parts) if part.pid is not None]
        return min(running or range(len(self._parts)), key=self._per_part.__getitem__)

    def _reported(self, part: int, reports: Sequence[Report]) -> None:
        for report in reports:
            endpoint_id = self._endpoint_of.pop(report.seq, None)
            if endpoint_id is None:
                continue
            self._per_part[part] -= 1
            self._per_endpoint[endpoint_id] -= 1
            if not self._per_endpoint[endpoint_id]:
                del self._per_endpoint[endpoint_id]
                # Idle endpoints are not remembered: the next job picks a child afresh.
                del self._home[endpoint_id]
        if self._on_reports is not None:
            self._on_reports(reports)
