"""Burst benchmark: a tournament spike. 100,000 events are published as fast as croupier's API
accepts them to 20 operators' endpoints, 2 of which are down, and we measure what the spike
does to croupier.

``make bench`` runs it after the delivery and wallet benchmarks
(``.venv/bin/python bench/burst.py``). One ``croupier serve`` runs the whole scenario on a
fresh store (SQLite by default: a file in a temporary directory; ``--store postgres``: a
temporary database on 127.0.0.1:5432, migrated with ``croupier migrate`` and dropped at the
end). Through the admin API the bench creates 20 tenants (one per operator), an API key for
each, and one endpoint per tenant subscribed to ``round.completed``. 18 endpoints point at a
receiver process on 127.0.0.1; the other 2 point at a port on 127.0.0.1 where nothing
listens (connection refused), with the default retry schedule and circuit breaker, so
their deliveries stay open (failed, or pending while the breaker holds them) through the
run. Then, in this order:

1. steady: 3,000 events spread evenly over the 18 healthy tenants, published as fast as
   the API accepts them, and drained -> deliveries/s from the first publish to the last
   arrival: croupier's delivery rate in the same run with nothing failing, which the
   burst's is compared with;
2. burst: 100,000 events spread evenly over the 20 tenants (5,000 each), published from
   this process by concurrent workers over kept-alive aiohttp connections, each with its
   tenant's key. It reports:

   * the publish acceptance rate (202s per second) and the publishes refused, by status
     code, and the client-side errors, by kind;
   * the time to drain the healthy endpoints: from the first publish until the receiver
     holds every accepted event at its tenant's endpoint, and the drain rate that makes
     (healthy deliveries / that time), as a ratio of the steady rate;
   * peak RSS of croupier: ``VmRSS`` from ``/proc/<pid>/status`` of the serve process and
     each of its descendants (the sender child processes), read every 0.15 s; the peak of
     the sum and the peak of each process;
   * the backlog over time: open deliveries (pending or failed), all and to the healthy
     endpoints, read from the store every 0.5 s with a read-only connection (SQLite:
     ``file:...?mode=ro``; PostgreSQL: asyncpg in a read-only transaction) through the
     partial indexes the dispatcher's claims use, so that a read costs about what the
     backlog holds, not the whole table;

3. check: that none was lost. The receiver keeps one byte per (tenant, event) and counts
   duplicates and arrivals at the wrong tenant's endpoint; every accepted event must have
   arrived at its healthy endpoint. The API must agree: paging ``GET /v1/deliveries`` with
   each tenant's key, every accepted event has a delivery, succeeded for a healthy
   endpoint, still open (pending or failed) for a down one.

Publishing stops after ``--publish-seconds``, done or not, and what was not published is
reported. If the healthy endpoints cannot drain within the burst's budget (``--seconds``),
the bench reports what arrived and how far the backlog got, and goes on; it never waits
without a bound.
Everything talks to 127.0.0.1 only. Every loop is bounded in count and in time, each phase
has a time budget and the run a deadline. Child processes get SIGTERM, then SIGKILL, even on
errors; the temporary directory and database are removed. The figures are printed as a
table and written to ``bench/results/burst-<timestamp>.json``, the backlog curve (with the
publish and arrival rates and croupier's RSS) to ``bench/results/burst-<timestamp>.png``.

The same file is the receiver (``burst.py receiver MAX_SECONDS``), so that it runs in its
own process with its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from delivery import (
    HOST,
    RESULTS_DIR,
    Children,
    CpuMeter,
    _descendants,
    _distribution,
    _exit_with_parent,
    _free_port,
    _machine,
    _n,
    _open_log,
    _passed_through_env,
    _run,
    _say,
    _source,
    _tail,
    spawn_listener,
    wait_healthy,
)

SELF = Path(__file__).resolve()
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_KEY = "bench_" + secrets.token_urlsafe(24)
#: A shipped type, validated against its schema on every publish, as in production.
EVENT_TYPE = "round.completed"
SERVER_SEED_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

#: Budgets in seconds. The run's deadline defaults to the burst's budget plus what the other
#: phases need; each phase gets at most what is left of it, the burst first.
BUDGET_S = {"setup": 60.0, "steady": 45.0}
#: The steady phase stops publishing this long before its budget ends, to drain.
STEADY_DRAIN_S = 8.0
#: Kept back from the burst's budget for the check and the teardown after it.
RESERVE_AFTER_BURST_S = 35.0
#: The API check stops paging this long before the run's deadline (for the teardown).
TEARDOWN_S = 12.0
#: The defaults publish all 100,000 events at 240 publishes/s or more, the least croupier
#: accepted over HTTP on a slow shared 2-core machine (376/s there since the seventh
#: session's publishing changes; see docs/benchmarks.md); slower, publishing stops at its
#: budget and the run reports how far it got.
DEFAULT_SECONDS = 450.0
DEFAULT_PUBLISH_SECONDS = 420.0
#: Everything but the burst: setup, steady, check, teardown.
OVERHEAD_S = 85.0
PROGRESS_EVERY_S = 2.0
RSS_EVERY_S = 0.15
BACKLOG_EVERY_S = 0.5
#: How often the driver asks the receiver what arrived while it waits for a drain.
POLL_S = 0.25
#: A drain wait gives up when nothing new arrived for this long.
STALL_S = 30.0
#: After the last arrival, croupier records each outcome; the store should show nothing
#: open to the healthy endpoints within this.
RECORD_WAIT_S = 10.0
#: Pages of ``GET /v1/deliveries`` asked at once in the API check.
CHECK_CONCURRENCY = 4
PAGE_LIMIT = 500
CALL_TIMEOUT_S = 30.0

#: Open deliveries per endpoint, in two parts that match the WHERE of the two partial
#: indexes the dispatcher claims through, so that a read costs about what is open, not the
#: whole table. ``{indexed}`` names the index on SQLite, whose planner would otherwise walk
#: a full index ordered by endpoint for the leased part; PostgreSQL gets the plain text.
OPEN_FREE_SQL = (
    "SELECT endpoint_id, COUNT(*) FROM deliveries{indexed} "
    "WHERE status IN ('pending', 'failed') AND lease_owner IS NULL GROUP BY endpoint_id"
)
OPEN_LEASED_SQL = (
    "SELECT endpoint_id, COUNT(*) FROM deliveries{indexed} "
    "WHERE status IN ('pending', 'failed') AND lease_owner IS NOT NULL GROUP BY endpoint_id"
)
SQLITE_BACKLOG_SQL = (
    OPEN_FREE_SQL.format(indexed=" INDEXED BY ix_deliveries_endpoint_due"),
    OPEN_LEASED_SQL.format(indexed=" INDEXED BY ix_deliveries_leased"),
)
PLAIN_BACKLOG_SQL = (OPEN_FREE_SQL.format(indexed=""), OPEN_LEASED_SQL.format(indexed=""))


# -- entry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    store: str = "sqlite"
    events: int = 100_000
    endpoints: int = 20
    down: int = 2
    steady_events: int = 3_000
    publish_concurrency: int = 32
    seconds: float = DEFAULT_SECONDS
    publish_seconds: float = DEFAULT_PUBLISH_SECONDS
    deadline: float = DEFAULT_SECONDS + OVERHEAD_S
    postgres_url: str = POSTGRES_URL
    keep_temp: bool = False
    strict: bool = False


def _parse_options(argv: Sequence[str]) -> Options:
    d = Options()
    p = argparse.ArgumentParser(description="croupier burst benchmark (see docs/benchmarks.md)")
    p.add_argument("--store", choices=("sqlite", "postgres"), default=d.store)
    p.add_argument("--events", type=int, default=d.events, help="events in the burst")
    p.add_argument("--endpoints", type=int, default=d.endpoints, help="tenants, one endpoint each")
    p.add_argument("--down", type=int, default=d.down, help="endpoints that refuse connections")
    p.add_argument(
        "--steady-events",
        type=int,
        default=d.steady_events,
        help="events of the steady phase, to the healthy endpoints; 0 skips it",
    )
    p.add_argument("--publish-concurrency", type=int, default=d.publish_concurrency)
    p.add_argument(
        "--seconds",
        type=float,
        default=d.seconds,
        help="the burst's budget, from its first publish to the end of the drain wait",
    )
    p.add_argument(
        "--publish-seconds",
        type=float,
        default=d.publish_seconds,
        help="the burst stops publishing after this long, done or not",
    )
    p.add_argument(
        "--deadline",
        type=float,
        help=f"the whole run's deadline (default: --seconds + {OVERHEAD_S:.0f})",
    )
    p.add_argument(
        "--postgres-url",
        default=d.postgres_url,
        help="a PostgreSQL on 127.0.0.1 (trust auth, CREATE DATABASE allowed) for --store "
        "postgres's temporary database",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the SQLite file and logs")
    p.add_argument("--strict", action="store_true", help="exit 2 when a check fails")
    a = p.parse_args(argv)
    if a.endpoints < 1 or not 0 <= a.down < a.endpoints:
        p.error("--endpoints must be positive and --down below it: some endpoint must be up")
    if a.events < a.endpoints or a.steady_events < 0 or a.publish_concurrency < 1:
        p.error("--events must be at least --endpoints; --publish-concurrency positive")
    if min(a.seconds, a.publish_seconds) <= 0:
        p.error("--seconds and --publish-seconds must be positive")
    if urllib.parse.urlsplit(a.postgres_url).hostname not in ("127.0.0.1", "localhost"):
        p.error("--postgres-url must be on 127.0.0.1: the bench talks to this machine only")
    return Options(
        store=a.store,
        events=a.events,
        endpoints=a.endpoints,
        down=a.down,
        steady_events=a.steady_events,
        publish_concurrency=a.publish_concurrency,
        seconds=a.seconds,
        publish_seconds=min(a.publish_seconds, a.seconds),
        deadline=a.deadline if a.deadline is not None else a.seconds + OVERHEAD_S,
        postgres_url=a.postgres_url,
        keep_temp=a.keep_temp,
        strict=a.strict,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["receiver"]:
        _run(run_receiver(float(args[1])))
        return 0
    return _run(run_driver(_parse_options(args)))


# -- the driver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    """One operator: a tenant, its key, and its one endpoint."""

    index: int
    name: str
    key: str
    endpoint_id: str
    down: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


@dataclass
class Run:
    """What the phases work with."""

    opts: Options
    children: Children
    server: Server
    receiver: ReceiverHandle
    backlog: BacklogSampler
    rss: RssSampler
    tenants: list[Tenant]
    session: aiohttp.ClientSession
    t0: float
    #: The burst's publishes, for the check after it.
    burst: Publishing | None = None

    def left_s(self) -> float:
        """Seconds left of the run's deadline."""
        return self.opts.deadline - (time.monotonic() - self.t0)

    @property
    def healthy(self) -> list[Tenant]:
        return [t for t in self.tenants if not t.down]


async def run_driver(opts: Options) -> int:
    """Set up, run the phases, print the table, write the JSON and the plot."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="croupier-burst-bench-"))
    children = Children()
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, main_task.cancel)
    result: dict[str, Any] = {
        "started_at": started.isoformat(),
        "machine": _machine(),
        "options": dict(opts.__dict__),
        "croupier_env": _passed_through_env(),
        "source": await _source(),
    }
    _say(
        f"croupier burst benchmark: {opts.events:,} events to {opts.endpoints} endpoints "
        f"({opts.down} down) on {opts.store}; work dir {workdir}; deadline {opts.deadline:.0f} s"
    )
    series: Series | None = None
    try:
        async with asyncio.timeout(opts.deadline):
            series = await _scenario(opts, children, workdir, result, t0)
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        await children.stop_all()
        if opts.keep_temp:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        result["finished_at"] = datetime.now(UTC).isoformat()
        result["seconds"] = time.monotonic() - t0
        result["verdicts"] = _verdicts(result)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        if series is not None:
            try:
                result["plot"] = str(_plot(result, series, stamp))
            except Exception as exc:  # a missing plot must not lose the figures
                traceback.print_exc()
                result["plot_error"] = f"{type(exc).__name__}: {exc}"
        _print_table(result)
        _say(f"wrote {_write_result(result, stamp)}")
        if "plot" in result:
            _say(f"wrote {result['plot']}")
    failed = any(v["verdict"] == "FAIL" for v in result["verdicts"])
    return 2 if opts.strict and failed else 0


@dataclass
class Series:
    """The time series the plot is drawn from (``time.time()`` stamps)."""

    backlog: list[BacklogSample]
    rss: list[tuple[float, int, int]]
    origin: float
    steady_span: tuple[float, float] | None


async def _scenario(
    opts: Options, children: Children, workdir: Path, result: dict[str, Any], t0: float
) -> Series | None:
    """The store, croupier, the receiver, the samplers; the phases in order."""
    async with (
        Store.made(opts, children, workdir) as store,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=opts.publish_concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S),
        ) as session,
    ):
        receiver = await ReceiverHandle.start(children, session, workdir, opts.deadline + 60)
        async with Server.running(children, workdir, store, session) as server:
            setup_t = time.monotonic()
            tenants = await asyncio.wait_for(
                setup_tenants(server, receiver, opts), BUDGET_S["setup"]
            )
            result["setup"] = {
                "tenants": len(tenants),
                "seconds": time.monotonic() - setup_t,
                "down_tenants": [t.name for t in tenants if t.down],
            }
            _say(
                f"{len(tenants)} tenants with a key and an endpoint each "
                f"({', '.join(t.name for t in tenants if t.down)} down)"
            )
            async with (
                BacklogSampler.running(store, tenants) as backlog,
                RssSampler.running(server.pid, opts.deadline) as rss,
            ):
                run = Run(opts, children, server, receiver, backlog, rss, tenants, session, t0)
                steady_span: tuple[float, float] | None = None
                if opts.steady_events > 0:
                    budget = min(
                        BUDGET_S["steady"], run.left_s() - opts.seconds - RESERVE_AFTER_BURST_S
                    )
                    result["steady"] = await _phase(
                        "steady", budget, lambda: phase_steady(run, budget)
                    )
                    s = result["steady"]
                    if "origin" in s:
                        steady_span = (s["origin"], s["origin"] + s["phase_seconds"])
                burst_budget = min(opts.seconds, run.left_s() - RESERVE_AFTER_BURST_S)
                origin = time.time()
                # The phase's own deadlines end it; this bound is a backstop.
                result["burst"] = await _phase(
                    "burst",
                    burst_budget + RECORD_WAIT_S + 10.0,
                    lambda: phase_burst(run, burst_budget),
                )
                origin = result["burst"].get("origin", origin)
                if "publish" in result["burst"]:
                    check_s = run.left_s() - TEARDOWN_S
                    result["check"] = await _phase(
                        "check", check_s + 5.0, lambda: phase_check(run, check_s)
                    )
                result["backlog"] = backlog.report(origin)
                result["rss"] = rss.report(origin)
            series = Series(backlog.samples, rss.series, origin, steady_span)
        result["croupier_log"] = _log_summary(server.log_path)
    _ratio(result)
    return series


async def _phase(
    key: str, budget_s: float, run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """One phase within its budget; a failure is recorded and the run goes on."""
    t0 = time.monotonic()
    if budget_s < 5.0:
        _say(f"[{key}] skipped: {budget_s:.0f} s left of the run's deadline")
        return {"error": "skipped: no time left", "phase_seconds": 0.0}
    try:
        async with asyncio.timeout(budget_s):
            out = await run()
    except TimeoutError:
        out = {"error": f"cut off at its budget of {budget_s:.0f} s"}
    except Exception as exc:  # a phase's failure is a figure of the run, not its end
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["phase_seconds"] = time.monotonic() - t0
    if "error" in out:
        _say(f"[{key}] failed: {out['error']}")
    return out


def _ratio(result: dict[str, Any]) -> None:
    """The burst against the steady phase: its drain rate, and its publish rate (which
    bounds the drain rate whenever croupier delivers as fast as it accepts)."""
    steady, burst = result.get("steady", {}), result.get("burst", {})
    if steady.get("drain_rate") and burst.get("drain_rate"):
        burst["drain_rate_ratio_to_steady"] = burst["drain_rate"] / steady["drain_rate"]
    if "publish" in steady and "publish" in burst and steady["publish"]["rate"]:
        ratio = burst["publish"]["rate"] / steady["publish"]["rate"]
        burst["publish_rate_ratio_to_steady"] = ratio


# -- setup -----------------------------------------------------------------------------------


async def setup_tenants(server: Server, receiver: ReceiverHandle, opts: Options) -> list[Tenant]:
    """One tenant per operator, its key, and its endpoint (the last ``down`` ones refused).

    One at a time: a few dozen calls, and concurrent creates of tenants could meet
    ``CONCURRENT_WRITE`` for nothing.
    """
    closed_port = _free_port()
    down_from = opts.endpoints - opts.down
    tenants: list[Tenant] = []
    for i in range(opts.endpoints):
        name = f"op-{i:02d}"
        await server.call(ADMIN_KEY, "POST", "/v1/tenants", {"name": name})
        answer = await server.call(ADMIN_KEY, "POST", f"/v1/tenants/{name}/keys", {"name": "rgs"})
        key = str(answer["key"])
        down = i >= down_from
        # Nothing listens on the closed port: every attempt is refused at once. The default
        # schedule (retries 30 s and 150 s later) and breaker keep those deliveries open
        # through the run, and none may hold up the other endpoints.
        url = f"http://{HOST}:{closed_port}/down/{i}" if down else receiver.url(f"/r/{i}")
        body = {"url": url, "event_types": [EVENT_TYPE], "description": f"operator {i}"}
        endpoint = await server.call(key, "POST", "/v1/endpoints", body)
        tenants.append(Tenant(i, name, key, str(endpoint["id"]), down))
    return tenants


# -- publishing ------------------------------------------------------------------------------


@dataclass
class Publishing:
    """One phase's publishes: event ``j`` goes to tenant ``targets[j % T]`` as that tenant's
    ``k = j // T``-th event, with the id ``{prefix}{tenant}-{k}``; and what the API said."""

    prefix: str
    targets: list[Tenant]
    count: int
    origin: float = 0.0
    #: When the last publish had its answer (or gave up).
    finished_at: float = 0.0
    issued: int = 0
    accepted: int = 0
    accepted_healthy: int = 0
    last_accepted_at: float = 0.0
    #: Per tenant index: one byte per k, 1 once the API answered 202.
    marks: dict[int, bytearray] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    refused_example: dict[str, str] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    error_example: dict[str, str] = field(default_factory=dict)
    #: 202 answers whose ``deliveries`` was not 1 (each tenant has one subscribed endpoint).
    odd_answers: int = 0
    round_trips_ms: list[float] = field(default_factory=list)
    #: Publishes accepted per half second since the origin.
    per_half_second: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for t in self.targets:
            self.marks[t.index] = bytearray(self.expected_for(t))

    def expected_for(self, tenant: Tenant) -> int:
        """How many of the ``count`` events go to ``tenant``."""
        position = next(i for i, t in enumerate(self.targets) if t.index == tenant.index)
        n = len(self.targets)
        return self.count // n + (1 if position < self.count % n else 0)

    def accepted_for(self, tenant: Tenant) -> int:
        return self.marks[tenant.index].count(1)

    def report(self) -> dict[str, Any]:
        seconds = self.last_accepted_at - self.origin if self.accepted else 0.0
        return {
            "requested": self.count,
            "issued": self.issued,
            "accepted": self.accepted,
            "accepted_to_healthy": self.accepted_healthy,
            "refused": sum(self.refused.values()),
            "refused_by_status": dict(self.refused),
            "refused_example": self.refused_example,
            "client_errors": sum(self.errors.values()),
            "client_errors_by_kind": dict(self.errors),
            "client_error_example": self.error_example,
            "odd_answers": self.odd_answers,
            "seconds": seconds,
            "rate": self.accepted / seconds if seconds > 0 else 0.0,
            "round_trip_ms": _distribution(sorted(self.round_trips_ms)),
            "accepted_per_half_second": _buckets(self.per_half_second),
        }


def _event(prefix: str, tenant: int, k: int) -> bytes:
    """A round of a tournament, about 0.5 KiB of JSON."""
    win = (k % 7) * 1.5
    return orjson.dumps(
        {
            "id": f"{prefix}{tenant}-{k}",
            "type": EVENT_TYPE,
            "data": {
                "roundId": f"rnd_{tenant}_{k}",
                "gameId": "book-of-dice",
                "playerId": f"plr_{k % 5000}",
                "externalPlayerId": f"op{tenant}-user-{k % 5000}",
                "betAmount": 2.0,
                "winAmount": win,
                "currency": "EUR",
                "rtp": win / 2.0,
                "duration": 3120,
                "provablyFair": {
                    "serverSeedHash": SERVER_SEED_HASH,
                    "clientSeed": "c1f8a3",
                    "nonce": k,
                },
            },
        }
    )


async def publish_all(
    server: Server, pub: Publishing, concurrency: int, *, deadline: float
) -> None:
    """Publish ``pub.count`` events, ``concurrency`` at a time, until done or ``deadline``
    (monotonic). No publish is retried: a refusal is a figure of the run."""
    n = len(pub.targets)
    url = server.base + "/v1/events"

    async def one(tenant: Tenant, k: int) -> None:
        body = _event(pub.prefix, tenant.index, k)
        t0 = time.perf_counter()
        try:
            async with server.session.post(url, data=body, headers=tenant.headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = type(exc).__name__
            pub.errors[kind] += 1
            pub.error_example.setdefault(kind, str(exc)[:200])
            return
        if status != 202:
            pub.refused[str(status)] += 1
            pub.refused_example.setdefault(str(status), raw[:200].decode(errors="replace"))
            return
        now = time.time()
        pub.round_trips_ms.append((time.perf_counter() - t0) * 1000)
        pub.marks[tenant.index][k] = 1
        pub.accepted += 1
        if not tenant.down:
            pub.accepted_healthy += 1
        pub.last_accepted_at = now
        pub.per_half_second[int((now - pub.origin) * 2)] += 1
        if orjson.loads(raw).get("deliveries") != 1:
            pub.odd_answers += 1

    async def worker() -> None:
        while pub.issued < pub.count and time.monotonic() < deadline:
            j = pub.issued
            pub.issued += 1
            await one(pub.targets[j % n], j // n)

    pub.origin = time.time()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pub.finished_at = time.time()
    if pub.issued < pub.count:
        _say(f"publishing stopped at its deadline after {pub.issued:,} of {pub.count:,} events")


# -- phases ----------------------------------------------------------------------------------


async def phase_steady(run: Run, budget_s: float) -> dict[str, Any]:
    """A smaller batch to the healthy endpoints only: the delivery rate to compare with."""
    label, opts = "[steady]", run.opts
    healthy = run.healthy
    _say(f"{label} {opts.steady_events:,} events to the {len(healthy)} healthy endpoints")
    pub = Publishing("s-", healthy, opts.steady_events)
    await run.receiver.reset(pub)
    run.rss.stretch = "steady"
    budget_s -= RECORD_WAIT_S
    out = await _publish_and_drain(
        run, pub, label, budget_s=budget_s, publish_s=budget_s - STEADY_DRAIN_S
    )
    # The burst starts from a store with nothing open to the healthy endpoints.
    out["recorded_after_s"] = await _wait_recorded(run, out)
    return out


async def phase_burst(run: Run, budget_s: float) -> dict[str, Any]:
    label, opts = "[burst]", run.opts
    _say(
        f"{label} {opts.events:,} events to {len(run.tenants)} endpoints ({opts.down} down), "
        f"{opts.publish_concurrency} concurrent publishers; budget {budget_s:.0f} s"
    )
    pub = Publishing("b-", run.tenants, opts.events)
    run.burst = pub
    await run.receiver.reset(pub)
    run.rss.stretch = "burst"
    out = await _publish_and_drain(
        run, pub, label, budget_s=budget_s, publish_s=opts.publish_seconds
    )
    out["recorded_after_s"] = await _wait_recorded(run, out)
    run.rss.stretch = "after"
    return out


async def _publish_and_drain(
    run: Run, pub: Publishing, label: str, *, budget_s: float, publish_s: float
) -> dict[str, Any]:
    """Publish for at most ``publish_s``, and wait until every accepted event arrived at its
    healthy endpoint, ``budget_s`` ran out, or nothing arrived for :data:`STALL_S` after
    publishing ended."""
    opts = run.opts
    start = time.monotonic()
    end = start + budget_s
    cpu = CpuMeter(
        {"croupier": run.server.pid, "receiver": run.receiver.pid, "driver": os.getpid()}
    )
    machine = _machine_busy()
    publisher = asyncio.create_task(
        publish_all(
            run.server,
            pub,
            opts.publish_concurrency,
            deadline=min(end, start + publish_s),
        )
    )
    published_at: float | None = None
    drained = False
    last_unique, last_change = -1, time.monotonic()
    next_progress = start + PROGRESS_EVERY_S
    stats: dict[str, Any] = {}
    healthy = [t.index for t in pub.targets if not t.down]
    try:
        while time.monotonic() < end:
            await asyncio.sleep(POLL_S)
            stats = await run.receiver.stats()
            unique = sum(stats["unique"][i] for i in healthy)
            now = time.monotonic()
            if publisher.done() and published_at is None:
                publisher.result()
                published_at = pub.finished_at
                _say(
                    f"{label} publishing ended after {now - start:.1f} s: "
                    f"{pub.accepted:,} accepted, {sum(pub.refused.values()):,} refused, "
                    f"{sum(pub.errors.values()):,} client errors"
                )
            if unique != last_unique:
                last_unique, last_change = unique, now
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                _say(_progress_line(label, run, pub, unique, now - start))
            if published_at is not None and unique >= pub.accepted_healthy:
                drained = True
                break
            if published_at is not None and now - last_change > STALL_S:
                _say(f"{label} gave up: nothing arrived for {STALL_S:.0f} s")
                break
        else:
            _say(f"{label} budget of {budget_s:.0f} s ran out")
    finally:
        if not publisher.done():
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            if published_at is None:
                published_at = time.time()
        cpu_use = cpu.stop()
        cpu_use["machine"] = _machine_share(machine, cpu_use)
    stats = await run.receiver.stats()
    out = _arrival_figures(run, pub, stats, drained=drained)
    out["publishing_ended_after_s"] = (published_at or time.time()) - pub.origin
    out["cpu"] = cpu_use
    timeline = await run.receiver.timeline()
    out["arrivals_per_half_second"] = _half_seconds(timeline, pub.origin)
    if drained:
        _say(
            f"{label} drained: {out['healthy_arrived']:,} deliveries at the healthy endpoints "
            f"{out['drain_seconds']:.1f} s after the first publish = "
            f"{out['drain_rate']:,.0f} deliveries/s"
        )
    else:
        _say(
            f"{label} NOT drained: {out['healthy_arrived']:,} of "
            f"{out['healthy_expected']:,} at the healthy endpoints after "
            f"{time.time() - pub.origin:.1f} s"
        )
    return out


def _machine_busy() -> tuple[int, int]:
    """Busy and total jiffies of all CPUs together, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + fields[4]  # idle, iowait
    # guest time is already counted in user time.
    total = sum(fields[:8])
    return total - idle, total


def _machine_share(before: tuple[int, int], cpu: dict[str, Any]) -> dict[str, float]:
    """Cores the whole machine kept busy since ``before``, and how many of them went to
    anything but croupier, the receiver and the driver (other processes, and steal time
    taken by the host): on a shared machine, other work takes cores from all three, and
    this says how much."""
    busy, total = (a - b for a, b in zip(_machine_busy(), before, strict=True))
    cores = (os.cpu_count() or 1) * busy / total if total > 0 else 0.0
    ours = sum(cpu.get(k, {}).get("cores", 0.0) for k in ("croupier", "receiver", "driver"))
    return {"busy_cores": cores, "others_cores": max(0.0, cores - ours)}


def _progress_line(label: str, run: Run, pub: Publishing, arrived: int, elapsed: float) -> str:
    refused = sum(pub.refused.values()) + sum(pub.errors.values())
    line = (
        f"{label} {elapsed:5.1f} s: published {pub.accepted:,}/{pub.count:,} "
        f"({refused:,} refused or failed), healthy arrivals {arrived:,}/{pub.accepted_healthy:,}"
    )
    last = run.backlog.samples[-1] if run.backlog.samples else None
    if last is not None:
        line += f", open {last.total:,} (healthy {last.healthy:,})"
    if run.rss.series:
        line += f", croupier RSS {run.rss.series[-1][1] / 1024:,.0f} MiB"
    return line


def _arrival_figures(
    run: Run, pub: Publishing, stats: dict[str, Any], *, drained: bool
) -> dict[str, Any]:
    """What arrived at the healthy endpoints, when, and how fast."""
    healthy = [t for t in pub.targets if not t.down]
    arrived = sum(stats["unique"][t.index] for t in healthy)
    lasts = [stats["last"][t.index] for t in healthy if stats["last"][t.index]]
    last = max(lasts) if lasts else None
    drain_s = last - pub.origin if (drained and last is not None) else None
    first = stats.get("first")
    return {
        "origin": pub.origin,
        "tenants": len(pub.targets),
        "healthy_endpoints": len(healthy),
        "publish": pub.report(),
        "healthy_expected": pub.accepted_healthy,
        "healthy_arrived": arrived,
        "arrivals": stats["count"],
        "duplicates": stats["duplicates"],
        "foreign": stats["foreign"],
        "stale": stats["stale"],
        "stray": stats["stray"],
        "drained": drained,
        "first_arrival_after_s": first - pub.origin if first else None,
        "drain_seconds": drain_s,
        "drain_rate": arrived / drain_s if drain_s else None,
        "arrived_rate_so_far": (
            arrived / (last - pub.origin) if last is not None and last > pub.origin else None
        ),
    }


async def _wait_recorded(run: Run, out: dict[str, Any]) -> float | None:
    """Seconds until the store shows nothing open to the healthy endpoints (croupier records
    each outcome after the answer arrived), or None if it still does after a while."""
    if not out.get("drained"):
        return None
    t0 = time.monotonic()
    while time.monotonic() - t0 < RECORD_WAIT_S:
        sample = await run.backlog.read_now()
        if sample is not None and sample.healthy == 0:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


async def phase_check(run: Run, budget_s: float) -> dict[str, Any]:
    """Nothing lost: the receiver's marks against the accepted publishes, then the API."""
    pub = run.burst
    if pub is None:
        raise RuntimeError("the burst did not publish")
    receiver_check = await _receiver_check(run, pub)
    _say(
        f"[check] receiver: {receiver_check['missing']:,} accepted events missing at their "
        f"healthy endpoint, {receiver_check['unexpected']:,} arrived though not accepted"
    )
    api = await _api_check(run, pub, deadline=time.monotonic() + budget_s)
    _say(
        f"[check] API: {'complete' if api['complete'] else 'INCOMPLETE'} "
        f"({api['pages']:,} pages in {api['seconds']:.1f} s); healthy: "
        f"{api['healthy_succeeded']:,} succeeded of {api['healthy_expected']:,} accepted, "
        f"{api['healthy_not_succeeded']:,} not; down: {api['down_open']:,} open of "
        f"{api['down_expected']:,}, {api['down_closed']:,} closed; "
        f"{api['accepted_without_delivery']:,} accepted without a delivery"
    )
    return {"receiver": receiver_check, "api": api}


async def _receiver_check(run: Run, pub: Publishing) -> dict[str, Any]:
    missing = unexpected = 0
    per_tenant: dict[str, int] = {}
    for tenant in run.healthy:
        seen = await run.receiver.seen(tenant.index)
        sent = pub.marks[tenant.index]
        miss = sum(1 for a, s in zip(sent, seen, strict=True) if a and not s)
        unexpected += sum(1 for a, s in zip(sent, seen, strict=True) if s and not a)
        missing += miss
        if miss:
            per_tenant[tenant.name] = miss
    return {"missing": missing, "unexpected": unexpected, "missing_per_tenant": per_tenant}


async def _api_check(run: Run, pub: Publishing, *, deadline: float) -> dict[str, Any]:
    """Every delivery of each tenant, paged with its own key: those of the burst's events
    by status, against the events the API accepted. Paging stops at ``deadline``
    (monotonic), and the check then says it is incomplete."""
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)
    t0 = time.monotonic()
    pages = 0
    complete = True
    by_tenant: dict[str, dict[str, Any]] = {}

    async def one(tenant: Tenant) -> None:
        nonlocal pages, complete
        statuses: Counter[str] = Counter()
        found = bytearray(len(pub.marks[tenant.index]))
        cursor: str | None = None
        prefix = f"{pub.prefix}{tenant.index}-"
        # Bounded: the phase's budget stops it too, but a cursor that never ends must not.
        for _ in range(10 * len(found) // PAGE_LIMIT + 10):
            if time.monotonic() > deadline:
                complete = False
                break
            query = {"endpoint_id": tenant.endpoint_id, "limit": str(PAGE_LIMIT)}
            if cursor is not None:
                query["cursor"] = cursor
            async with sem:
                page = await run.server.call(tenant.key, "GET", "/v1/deliveries", None, query)
            pages += 1
            for d in page["data"]:
                event_id = str(d["event_id"])
                if not event_id.startswith(prefix):
                    continue
                statuses[str(d["status"])] += 1
                k = int(event_id[len(prefix) :])
                if 0 <= k < len(found):
                    found[k] = 1
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        else:
            complete = False
        sent = pub.marks[tenant.index]
        by_tenant[tenant.name] = {
            "down": tenant.down,
            "accepted": sent.count(1),
            "statuses": dict(statuses),
            "accepted_without_delivery": sum(
                1 for a, f in zip(sent, found, strict=True) if a and not f
            ),
        }

    await asyncio.gather(*(one(t) for t in run.tenants))
    healthy = [v for v in by_tenant.values() if not v["down"]]
    down = [v for v in by_tenant.values() if v["down"]]
    succeeded = sum(v["statuses"].get("succeeded", 0) for v in healthy)
    down_failed = sum(v["statuses"].get("failed", 0) for v in down)
    down_pending = sum(v["statuses"].get("pending", 0) for v in down)
    down_open = down_failed + down_pending
    return {
        "complete": complete and len(by_tenant) == len(run.tenants),
        "pages": pages,
        "seconds": time.monotonic() - t0,
        "healthy_expected": sum(v["accepted"] for v in healthy),
        "healthy_succeeded": succeeded,
        "healthy_not_succeeded": sum(sum(v["statuses"].values()) for v in healthy) - succeeded,
        "down_expected": sum(v["accepted"] for v in down),
        "down_open": down_open,
        # failed: attempted and refused; pending: not attempted yet (held by the breaker,
        # or not yet claimed).
        "down_failed": down_failed,
        "down_pending": down_pending,
        "down_closed": sum(sum(v["statuses"].values()) for v in down) - down_open,
        "accepted_without_delivery": sum(
            v["accepted_without_delivery"] for v in by_tenant.values()
        ),
        "per_tenant": by_tenant,
    }


# -- the store, and croupier -----------------------------------------------------------------


@dataclass
class Store:
    """croupier's database: a SQLite file, or a temporary PostgreSQL database."""

    kind: str
    url: str
    secret_key: str | None = None
    sqlite_path: Path | None = None
    #: For the backlog reader (asyncpg).
    pg_dsn: str | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def made(cls, opts: Options, children: Children, workdir: Path) -> AsyncIterator[Store]:
        if opts.store == "sqlite":
            path = workdir / "croupier.db"
            # `croupier serve` migrates a SQLite file by itself.
            yield cls("sqlite", f"sqlite:///{path}", sqlite_path=path)
            return
        import asyncpg
        from cryptography.fernet import Fernet

        name = f"burst_bench_{secrets.token_hex(4)}"
        base = opts.postgres_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(opts.postgres_url, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            store = cls(
                "postgres",
                f"{base}/{name}",
                secret_key=Fernet.generate_key().decode(),
                pg_dsn=f"{base}/{name}",
            )
            await _migrate(children, workdir, store)
            yield store
        finally:
            await _drop_database(admin, opts.postgres_url, name)


async def _drop_database(admin: Any, url: str, name: str) -> None:
    """Drop the temporary database, on a fresh connection if the first one died (the server
    may have restarted under the run); say so, without raising, if it cannot be dropped."""
    import asyncpg

    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    try:
        await admin.execute(drop)
        return
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass
    finally:
        with contextlib.suppress(asyncpg.InterfaceError, OSError):
            await admin.close()
    try:
        fresh = await asyncpg.connect(url, timeout=10)
        try:
            await fresh.execute(drop)
        finally:
            await fresh.close()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        _say(f"could not drop the temporary database {name}: {type(exc).__name__}: {exc}")


def _croupier_env(store: Store) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    env["CROUPIER_LOG_LEVEL"] = "warning"
    env.update(_passed_through_env())
    env["CROUPIER_DATABASE_URL"] = store.url
    env["CROUPIER_ADMIN_KEY"] = ADMIN_KEY
    env["CROUPIER_ENVIRONMENT"] = "bench"
    # A free port, never the default one another croupier may hold.
    env["CROUPIER_GRPC_PORT"] = "0"
    if store.secret_key is not None:
        env["CROUPIER_SECRET_KEY"] = store.secret_key
    return env


async def _migrate(children: Children, workdir: Path, store: Store) -> None:
    log_path = workdir / "migrate.log"
    log = _open_log(log_path)
    try:
        proc = await children.spawn(
            "migrate",
            [sys.executable, "-m", "croupier.cli", "migrate"],
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=_croupier_env(store),
        )
    finally:
        log.close()
    try:
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        await children.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"croupier migrate exited with {proc.returncode}:\n{_tail(log_path)}")


class Server:
    """One ``croupier serve`` subprocess and calls to its API."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        session: aiohttp.ClientSession,
        port: int,
        log_path: Path,
    ) -> None:
        self.proc = proc
        self.session = session
        self.base = f"http://{HOST}:{port}"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, children: Children, workdir: Path, store: Store, session: aiohttp.ClientSession
    ) -> AsyncIterator[Server]:
        port = _free_port()
        # --dev: the receiver listens on this machine's loopback address.
        argv = [
            *(sys.executable, "-m", "croupier.cli", "serve", "--dev"),
            *("--host", HOST, "--port", str(port)),
        ]
        log_path = workdir / "croupier.log"
        log = _open_log(log_path)
        try:
            proc = await children.spawn(
                "croupier",
                argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=_croupier_env(store),
            )
        finally:
            log.close()
        server = cls(proc, session, port, log_path)
        try:
            await wait_healthy(proc, session, server.base, within_s=60.0)
            _say(f"croupier serving on {server.base} (pid {proc.pid}), store {store.kind}")
            yield server
        except BaseException:
            _say(f"croupier log, last lines:\n{_tail(log_path)}")
            raise
        finally:
            await children.stop(proc, grace_s=20.0)
            if proc.returncode not in (0, None):
                _say(f"croupier exited with {proc.returncode}; log:\n{_tail(log_path)}")

    async def call(
        self,
        key: str,
        method: str,
        path: str,
        body: Any,
        query: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.base + path, data=data, headers=headers, params=query
        ) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
            return orjson.loads(raw) if raw else None


_LOG_LEVEL = re.compile(r"\[(warning|error|critical)\s*\]\s+(.*?)(?:\s{2,}|$)")


def _log_summary(path: Path) -> dict[str, Any]:
    """croupier's warnings and errors (it logs at ``warning`` here), counted by message:
    a failure inside croupier shows here even when the bench's own checks pass."""
    counts: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"read": False}
    for line in text.splitlines():
        found = _LOG_LEVEL.search(line)
        if found is not None:
            counts[f"{found.group(1)}: {found.group(2)}"] += 1
    by_level = Counter(key.split(":", 1)[0] for key in counts.elements())
    return {
        "read": True,
        "errors": by_level["error"] + by_level["critical"],
        "warnings": by_level["warning"],
        "messages": dict(counts.most_common(10)),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


# -- the backlog -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BacklogSample:
    at: float
    total: int
    healthy: int
    down: int
    leased: int
    read_ms: float


class _Reader(Protocol):
    async def read(self) -> tuple[dict[str, int], int]: ...

    async def close(self) -> None: ...


class _SqliteReader:
    """A read-only connection to croupier's SQLite file (WAL: it never blocks the writer)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            timeout=2.0,
            isolation_level=None,
            check_same_thread=False,
        )
        self.queries = SQLITE_BACKLOG_SQL

    def _read(self) -> tuple[dict[str, int], int]:
        # One read transaction: a delivery moving from free to leased between the two
        # counts is counted once.
        self.conn.execute("BEGIN")
        try:
            free = dict(self.conn.execute(self.queries[0]).fetchall())
            leased = dict(self.conn.execute(self.queries[1]).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such index" not in str(exc) or self.queries == PLAIN_BACKLOG_SQL:
                raise
            # A schema without those indexes: the plain queries still count right, at the
            # price of a scan.
            self.queries = PLAIN_BACKLOG_SQL
            raise
        finally:
            self.conn.execute("COMMIT")
        return _merge(free, leased)

    async def read(self) -> tuple[dict[str, int], int]:
        return await asyncio.to_thread(self._read)

    async def close(self) -> None:
        self.conn.close()


class _PgReader:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> _PgReader:
        import asyncpg

        return cls(await asyncpg.connect(dsn, timeout=10))

    async def read(self) -> tuple[dict[str, int], int]:
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            free = {r[0]: int(r[1]) for r in await self.conn.fetch(PLAIN_BACKLOG_SQL[0])}
            leased = {r[0]: int(r[1]) for r in await self.conn.fetch(PLAIN_BACKLOG_SQL[1])}
        return _merge(free, leased)

    async def close(self) -> None:
        await self.conn.close()


def _merge(free: dict[str, int], leased: dict[str, int]) -> tuple[dict[str, int], int]:
    counts = Counter(free)
    counts.update(leased)
    return dict(counts), sum(leased.values())


class BacklogSampler:
    """Open deliveries (pending or failed), all and to the healthy endpoints, every
    :data:`BACKLOG_EVERY_S`, straight from the store."""

    def __init__(self, reader: _Reader, tenants: Sequence[Tenant]) -> None:
        self.reader = reader
        self.healthy = {t.endpoint_id for t in tenants if not t.down}
        self.samples: list[BacklogSample] = []
        self.errors = 0
        self.first_error: str | None = None
        self._lock = asyncio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, store: Store, tenants: Sequence[Tenant]
    ) -> AsyncIterator[BacklogSampler]:
        reader: _Reader
        if store.sqlite_path is not None:
            reader = _SqliteReader(store.sqlite_path)
        else:
            assert store.pg_dsn is not None
            reader = await _PgReader.connect(store.pg_dsn)
        sampler = cls(reader, tenants)
        task = asyncio.create_task(sampler._loop())
        try:
            yield sampler
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await reader.close()

    async def read_now(self) -> BacklogSample | None:
        """One sample, kept with the others; None if the store could not be read."""
        async with self._lock:
            t0 = time.perf_counter()
            try:
                counts, leased = await self.reader.read()
            except Exception as exc:  # the store is croupier's; a failed read is a figure
                self.errors += 1
                if self.first_error is None:
                    self.first_error = f"{type(exc).__name__}: {exc}"
                return None
            healthy = sum(n for ep, n in counts.items() if ep in self.healthy)
            total = sum(counts.values())
            sample = BacklogSample(
                time.time(),
                total,
                healthy,
                total - healthy,
                leased,
                (time.perf_counter() - t0) * 1000,
            )
            self.samples.append(sample)
            return sample

    async def _loop(self) -> None:
        next_at = time.monotonic()
        # Bounded by the run's deadline in practice; the count bound is a backstop.
        for _ in range(1_000_000):
            await self.read_now()
            next_at += BACKLOG_EVERY_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def report(self, origin: float) -> dict[str, Any]:
        burst = [s for s in self.samples if s.at >= origin]
        out: dict[str, Any] = {
            "every_s": BACKLOG_EVERY_S,
            "samples": len(self.samples),
            "read_errors": self.errors,
            "first_read_error": self.first_error,
            "read_ms": _distribution(sorted(s.read_ms for s in self.samples)),
            "columns": ["seconds_since_burst_start", "open", "open_healthy", "open_down", "leased"],
            "series": [
                [round(s.at - origin, 3), s.total, s.healthy, s.down, s.leased]
                for s in self.samples
            ],
        }
        if burst:
            peak = max(burst, key=lambda s: s.total)
            peak_h = max(burst, key=lambda s: s.healthy)
            out.update(
                peak_open=peak.total,
                peak_open_at_s=peak.at - origin,
                peak_open_healthy=peak_h.healthy,
                peak_open_healthy_at_s=peak_h.at - origin,
                last_open=burst[-1].total,
                last_open_healthy=burst[-1].healthy,
                last_open_down=burst[-1].down,
            )
        return out


# -- memory ----------------------------------------------------------------------------------


@dataclass
class _Peaks:
    """The largest sizes seen in one stretch of the run, in KiB."""

    total: int = 0
    total_at: float = 0.0
    per_process: dict[str, int] = field(default_factory=dict)

    def report(self, origin: float) -> dict[str, Any]:
        return {
            "peak_total_mib": self.total / 1024,
            "peak_total_at_s": self.total_at - origin,
            "peak_per_process_mib": {k: v / 1024 for k, v in self.per_process.items()},
        }


class RssSampler:
    """``VmRSS`` of croupier's serve process and each of its descendants (its sender child
    processes), every :data:`RSS_EVERY_S`, from /proc. A descendant that appears later is
    picked up at the next sample. Peaks are kept per stretch of the run (:attr:`stretch`),
    so that the burst's are not those of the API check's paging after it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        #: (time.time(), sum of all, serve process alone), in KiB.
        self.series: list[tuple[float, int, int]] = []
        self.stretch = "setup"
        self.peaks: dict[str, _Peaks] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, pid: int, deadline_s: float) -> AsyncIterator[RssSampler]:
        sampler = cls(pid)
        task = asyncio.create_task(sampler._loop(int(deadline_s / RSS_EVERY_S) + 1))
        try:
            yield sampler
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sample(self) -> None:
        now = time.time()
        sizes = {"serve": _rss_kib(self.pid)}
        for child in _descendants(self.pid):
            sizes[f"{_kind(child)}-{child}"] = _rss_kib(child)
        total = sum(sizes.values())
        self.series.append((now, total, sizes["serve"]))
        for peaks in (
            self.peaks.setdefault(self.stretch, _Peaks()),
            self.peaks.setdefault("run", _Peaks()),
        ):
            if total > peaks.total:
                peaks.total, peaks.total_at = total, now
            for name, kib in sizes.items():
                peaks.per_process[name] = max(peaks.per_process.get(name, 0), kib)

    async def _loop(self, count: int) -> None:
        next_at = time.monotonic()
        for _ in range(count):
            self.sample()
            next_at += RSS_EVERY_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def report(self, origin: float) -> dict[str, Any]:
        burst = [s for s in self.series if s[0] >= origin]
        return {
            "every_s": RSS_EVERY_S,
            "samples": len(self.series),
            # The burst's peaks (publishing and draining) are the headline figures.
            **self.peaks.get("burst", _Peaks()).report(origin),
            "per_stretch": {k: v.report(origin) for k, v in self.peaks.items()},
            "at_burst_start_mib": burst[0][1] / 1024 if burst else None,
            "at_end_mib": self.series[-1][1] / 1024 if self.series else None,
            "columns": ["seconds_since_burst_start", "total_kib", "serve_kib"],
            # Every other sample is enough for the curve, and halves the file.
            "series": [[round(t - origin, 3), tot, main] for t, tot, main in self.series[::2]],
        }


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _kind(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "child"
    return "sender" if b"croupier.dispatch.child" in cmdline else "child"


# -- the receiver ----------------------------------------------------------------------------


class ReceiverHandle:
    """The driver's side of the receiver process."""

    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.session = session
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls,
        children: Children,
        session: aiohttp.ClientSession,
        workdir: Path,
        max_seconds: float,
    ) -> ReceiverHandle:
        proc, port = await spawn_listener(
            children,
            "receiver",
            [sys.executable, str(SELF), "receiver", str(max_seconds)],
            workdir / "receiver.log",
        )
        self = cls(proc, session)
        self.port = port
        _say(f"receiver listening on {self.url('/')} (pid {proc.pid})")
        return self

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def _get(self, path: str, body: Any = None) -> bytes:
        method = "GET" if body is None else "POST"
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.url(path), data=data) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def reset(self, pub: Publishing) -> None:
        sizes = {str(t.index): pub.expected_for(t) for t in pub.targets if not t.down}
        await self._get("/_reset", {"prefix": pub.prefix, "sizes": sizes})

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(await self._get("/_stats"))
        return out

    async def seen(self, tenant: int) -> bytes:
        return await self._get(f"/_seen/{tenant}")

    async def timeline(self) -> dict[int, int]:
        raw: dict[str, int] = orjson.loads(await self._get("/_timeline"))
        return {int(k): v for k, v in raw.items()}


class Recorder:
    """What the receiver saw since its last reset: one byte per (tenant, event), 1 once it
    arrived, so memory stays proportional to the events published, not to the arrivals."""

    def __init__(self, prefix: str = "", sizes: dict[int, int] | None = None) -> None:
        self.prefix = prefix
        self.seen = {t: bytearray(n) for t, n in (sizes or {}).items()}
        self.tenants = max(self.seen, default=-1) + 1
        self.unique = [0] * self.tenants
        self.last: list[float | None] = [None] * self.tenants
        self.first: float | None = None
        self.count = 0
        self.duplicates = 0
        #: Another tenant's event at this endpoint: a breach of isolation.
        self.foreign = 0
        #: An id that is not this phase's (say, a late retry of the steady phase's).
        self.stale = 0
        #: A path that is no endpoint of this phase.
        self.stray = 0
        #: Arrivals per 0.1 s of ``time.time()``.
        self.timeline: Counter[int] = Counter()

    def record(self, now: float, path: str, webhook_id: str) -> None:
        self.count += 1
        self.timeline[int(now * 10)] += 1
        if self.first is None:
            self.first = now
        tenant = _tenant_of(path)
        if tenant is None or tenant not in self.seen:
            self.stray += 1
            return
        self.last[tenant] = now
        if not webhook_id.startswith(self.prefix):
            self.stale += 1
            return
        owner, _, number = webhook_id[len(self.prefix) :].partition("-")
        if owner != str(tenant):
            self.foreign += 1
            return
        marks = self.seen[tenant]
        k = int(number) if number.isdigit() else -1
        if not 0 <= k < len(marks):
            self.stale += 1
        elif marks[k]:
            self.duplicates += 1
        else:
            marks[k] = 1
            self.unique[tenant] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "unique": self.unique,
            "last": self.last,
            "first": self.first,
            "duplicates": self.duplicates,
            "foreign": self.foreign,
            "stale": self.stale,
            "stray": self.stray,
        }


def _tenant_of(path: str) -> int | None:
    """``/r/{tenant}`` -> tenant."""
    head, _, tail = path.rpartition("/")
    return int(tail) if head == "/r" and tail.isdigit() else None


async def run_receiver(max_seconds: float) -> None:
    """Answer every webhook with 200 at once and record it; ``/_...`` paths are the
    driver's. It exits on SIGTERM, when its parent goes away, or after ``max_seconds``."""
    recorder = Recorder()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal recorder
        now = time.time()
        path = request.path
        if not path.startswith("/_"):
            await request.read()
            recorder.record(now, path, request.headers.get("webhook-id", ""))
            return web.Response(body=b"ok")
        if path == "/_reset":
            query = orjson.loads(await request.read())
            sizes = {int(t): int(n) for t, n in query["sizes"].items()}
            recorder = Recorder(str(query["prefix"]), sizes)
            return web.Response(body=b"{}", content_type="application/json")
        if path == "/_stats":
            return web.Response(
                body=orjson.dumps(recorder.stats()), content_type="application/json"
            )
        if path == "/_timeline":
            body = orjson.dumps({str(k): v for k, v in recorder.timeline.items()})
            return web.Response(body=body, content_type="application/json")
        if path.startswith("/_seen/"):
            marks = recorder.seen.get(int(path.rsplit("/", 1)[1]), bytearray())
            return web.Response(body=bytes(marks), content_type="application/octet-stream")
        return web.Response(status=404)

    server = web.Server(handle, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, HOST, 0, backlog=4096)
    print(f"PORT {listener.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_exit_with_parent(stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    watchdog.cancel()
    listener.close()
    await server.shutdown(1.0)


# -- report ----------------------------------------------------------------------------------


def _buckets(counter: Counter[int]) -> list[int]:
    """Counts per bucket 0..max, zeros included."""
    if not counter:
        return []
    return [counter.get(i, 0) for i in range(max(counter) + 1)]


def _half_seconds(deciseconds: dict[int, int], origin: float) -> list[int]:
    """The receiver's arrivals per 0.1 s of wall time, as arrivals per half second since
    ``origin``."""
    halves: Counter[int] = Counter()
    for ds, n in deciseconds.items():
        halves[max(0, int((ds / 10 - origin) * 2))] += n
    return [halves.get(i, 0) for i in range(max(halves) + 1)] if halves else []


def _verdicts(result: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    burst = result.get("burst", {})
    if "publish" not in burst:
        err = burst.get("error", "not run")
        return [{"check": "the burst ran", "value": str(err), "verdict": "FAIL"}]
    pub = burst["publish"]
    refused = pub["refused"] + pub["client_errors"]
    out.append(
        {
            "check": "every publish of the burst accepted (not a target: reported)",
            "value": f"{pub['accepted']:,} of {pub['requested']:,}; "
            + (
                ", ".join(
                    [f"{n:,} x {s}" for s, n in pub["refused_by_status"].items()]
                    + [f"{n:,} x {k}" for k, n in pub["client_errors_by_kind"].items()]
                )
                or "none refused"
            ),
            "verdict": "ok" if refused == 0 and pub["issued"] == pub["requested"] else "note",
        }
    )
    out.append(
        {
            "check": "healthy endpoints drained within the burst's budget",
            "value": (
                f"{burst['drain_seconds']:,.1f} s"
                if burst["drained"]
                else f"no: {burst['healthy_arrived']:,} of {burst['healthy_expected']:,}"
            ),
            "verdict": "PASS" if burst["drained"] else "FAIL",
        }
    )
    check = result.get("check", {})
    rec = check.get("receiver")
    if rec is not None:
        isolation = burst["foreign"] + burst["stray"]
        ok = rec["missing"] == 0 and isolation == 0
        out.append(
            {
                "check": "receiver: every accepted event at its healthy endpoint, none elsewhere",
                "value": f"{rec['missing']:,} missing, {isolation:,} at a wrong endpoint, "
                f"{burst['duplicates']:,} duplicates",
                "verdict": "PASS" if ok else "FAIL",
            }
        )
    api = check.get("api")
    if api is not None:
        ok = (
            api["accepted_without_delivery"] == 0
            and api["healthy_succeeded"] == api["healthy_expected"]
            and api["healthy_not_succeeded"] == 0
            and api["down_open"] == api["down_expected"]
        )
        value = (
            f"healthy {api['healthy_succeeded']:,}/{api['healthy_expected']:,} succeeded, "
            f"down {api['down_open']:,}/{api['down_expected']:,} open, "
            f"{api['accepted_without_delivery']:,} accepted without a delivery"
        )
        if not api["complete"]:
            # Paging ran out of time: what was not read is not evidence of a loss.
            value += f"; INCOMPLETE: {api['pages']:,} pages read within the budget"
        out.append(
            {
                "check": "API: each accepted event's delivery succeeded (healthy) or open (down)",
                "value": value,
                "verdict": ("PASS" if ok else "FAIL") if api["complete"] else "note",
            }
        )
    elif "error" in check:
        out.append({"check": "nothing lost", "value": check["error"], "verdict": "FAIL"})
    log = result.get("croupier_log", {})
    if log.get("read"):
        top = "; ".join(f"{n:,} x {m[:90]}" for m, n in list(log["messages"].items())[:3])
        out.append(
            {
                "check": "croupier logged no error (not a target: reported)",
                "value": f"{log['errors']:,} errors, {log['warnings']:,} warnings"
                + (f": {top}" if top else ""),
                "verdict": "ok" if log["errors"] == 0 else "note",
            }
        )
    return out


def _print_table(result: dict[str, Any]) -> None:
    opts = result["options"]
    rows: list[tuple[str, str]] = [
        (
            "scenario",
            f"{opts['events']:,} events, {opts['endpoints']} endpoints ({opts['down']} down), "
            f"{opts['store']}",
        )
    ]
    steady = result.get("steady", {})
    if "publish" in steady:
        rows += [
            ("steady: events accepted, publish rate/s", _accepted(steady["publish"])),
            (
                "steady: deliveries/s, first publish to last arrival",
                _n(steady["drain_rate"]) if steady["drain_rate"] else "not drained",
            ),
        ]
    burst = result.get("burst", {})
    if "publish" in burst:
        pub = burst["publish"]
        rt = pub["round_trip_ms"]
        refused = ", ".join(f"{n:,} x {s}" for s, n in pub["refused_by_status"].items())
        errors = ", ".join(f"{n:,} x {k}" for k, n in pub["client_errors_by_kind"].items())
        rows += [
            ("burst: events accepted, publish rate/s", _accepted(pub)),
            (
                "burst: publishes refused (status) / client errors",
                f"{refused or 0} / {errors or 0}",
            ),
            (
                "burst: publish round trip p50 / p99 / max, ms",
                f"{rt['p50']:,.1f} / {rt['p99']:,.1f} / {rt['max']:,.1f}",
            ),
            (
                "burst: healthy deliveries arrived / expected",
                f"{burst['healthy_arrived']:,} / {burst['healthy_expected']:,} "
                f"({burst['duplicates']:,} duplicates)",
            ),
            (
                "burst: s from first publish to healthy drained",
                _n(burst["drain_seconds"]) if burst["drained"] else "not drained in its budget",
            ),
            ("burst: publishing ended after, s", _n(burst["publishing_ended_after_s"])),
        ]
        if burst["drained"]:
            # The last arrival may come before the driver reads the last publish's answer.
            tail = max(0.0, burst["drain_seconds"] - burst["publishing_ended_after_s"])
            rows.append(("burst: healthy drained after publishing ended, s", f"{tail:,.2f}"))
        rate = burst.get("drain_rate") or burst.get("arrived_rate_so_far")
        ratio = burst.get("drain_rate_ratio_to_steady")
        rows.append(
            (
                "burst: drain rate, deliveries/s (ratio to steady)",
                f"{_n(rate)}" + (f" ({ratio:.2f}x)" if ratio else ""),
            )
        )
        if "publish_rate_ratio_to_steady" in burst:
            rows.append(
                (
                    "burst: publish rate, ratio to steady",
                    f"{burst['publish_rate_ratio_to_steady']:.2f}x",
                )
            )
    for key in ("steady", "burst"):
        cpu = result.get(key, {}).get("cpu", {})
        if "croupier" in cpu:
            rows.append(
                (
                    f"{key}: CPU, cores: croupier (serve alone) / receiver / driver",
                    f"{cpu['croupier']['cores']:.2f} ({cpu['croupier_main']['cores']:.2f}) / "
                    f"{cpu.get('receiver', {}).get('cores', 0.0):.2f} / "
                    f"{cpu.get('driver', {}).get('cores', 0.0):.2f}",
                )
            )
            if "machine" in cpu:
                rows.append(
                    (
                        f"{key}: machine's busy cores (other processes)",
                        f"{cpu['machine']['busy_cores']:.2f} "
                        f"({cpu['machine']['others_cores']:.2f})",
                    )
                )
    backlog = result.get("backlog", {})
    if "peak_open" in backlog:
        rows += [
            (
                "backlog: peak open / to healthy endpoints",
                f"{backlog['peak_open']:,} at {backlog['peak_open_at_s']:.1f} s / "
                f"{backlog['peak_open_healthy']:,} at {backlog['peak_open_healthy_at_s']:.1f} s",
            ),
            (
                "backlog: open at the end (healthy / down)",
                f"{backlog['last_open_healthy']:,} / {backlog['last_open_down']:,}",
            ),
            ("backlog: store read, ms p50 / max", _ms(backlog["read_ms"])),
        ]
    api = result.get("check", {}).get("api", {})
    if "down_open" in api:
        rows.append(
            (
                "down endpoints: open, of them failed / pending",
                f"{api['down_open']:,}: {api['down_failed']:,} / {api['down_pending']:,}",
            )
        )
    rss = result.get("rss", {})
    if rss.get("samples"):
        per = ", ".join(f"{k} {v:,.0f}" for k, v in rss["peak_per_process_mib"].items())
        rows += [
            (
                "croupier RSS in the burst: peak of the sum, MiB",
                f"{rss['peak_total_mib']:,.0f} at {rss['peak_total_at_s']:.1f} s "
                f"(at the burst's start {rss['at_burst_start_mib'] or 0:,.0f}; "
                f"whole run {rss['per_stretch']['run']['peak_total_mib']:,.0f})",
            ),
            ("croupier RSS in the burst: peak per process, MiB", per),
        ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 40))
    for v in result["verdicts"]:
        print(f"{v['verdict']:<5} {v['check']}: {v['value']}")
    print("=" * (width + 40), flush=True)


def _accepted(pub: dict[str, Any]) -> str:
    return f"{pub['accepted']:,} of {pub['requested']:,}, {_n(pub['rate'])}"


def _ms(d: dict[str, float]) -> str:
    return f"{d['p50']:,.1f} / {d['max']:,.1f}"


def _plot(result: dict[str, Any], series: Series, stamp: str) -> Path:
    """The backlog over time, with the publish and arrival rates and croupier's RSS, on one
    time axis: seconds since the burst's first publish (the steady phase is before 0)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    origin = series.origin
    fig = Figure(figsize=(11, 9), layout="constrained")
    FigureCanvasAgg(fig)
    ax_open, ax_rate, ax_rss = fig.subplots(3, 1, sharex=True)
    t = [s.at - origin for s in series.backlog]
    ax_open.plot(t, [s.total for s in series.backlog], label="open, all endpoints")
    ax_open.plot(t, [s.healthy for s in series.backlog], label="open, healthy endpoints")
    ax_open.plot(t, [s.down for s in series.backlog], ls="--", label="open, down endpoints")
    ax_open.set_ylabel("open deliveries\n(pending or failed)")
    for key in ("steady", "burst"):
        phase = result.get(key, {})
        if "publish" not in phase:
            continue
        shift = phase["origin"] - origin
        # The same colours in both phases; the legend names them once.
        for values, colour, name in (
            (phase["publish"]["accepted_per_half_second"], "C0", "publishes accepted/s"),
            (phase["arrivals_per_half_second"], "C1", "arrivals/s at the healthy endpoints"),
        ):
            ax_rate.plot(
                [shift + i / 2 for i in range(len(values))],
                [n * 2 for n in values],
                color=colour,
                label=name if key == "burst" else "_nolegend_",
            )
    ax_rate.set_ylabel("per second\n(0.5 s buckets)")
    rss_t = [r[0] - origin for r in series.rss]
    ax_rss.plot(rss_t, [r[1] / 1024 for r in series.rss], label="serve + sender processes")
    ax_rss.plot(rss_t, [r[2] / 1024 for r in series.rss], label="serve process")
    ax_rss.set_ylabel("croupier RSS, MiB")
    ax_rss.set_xlabel("seconds since the burst's first publish")
    burst = result.get("burst", {})
    marks = [("publishing ended", burst.get("publishing_ended_after_s"), "grey")]
    if burst.get("drained"):
        marks.append(("healthy endpoints drained", burst.get("drain_seconds"), "green"))
    for ax in (ax_open, ax_rate, ax_rss):
        first = ax is ax_open
        if series.steady_span is not None:
            a, b = series.steady_span
            label = "steady phase" if first else "_nolegend_"
            ax.axvspan(a - origin, b - origin, color="0.92", label=label)
        for name, at, colour in marks:
            if at is not None:
                ax.axvline(at, color=colour, ls=":", label=name if first else "_nolegend_")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize="small")
    opts, commit = result["options"], result.get("source", {}).get("commit", "")[:7]
    fig.suptitle(
        f"croupier burst: {opts['events']:,} events to {opts['endpoints']} endpoints "
        f"({opts['down']} down), {opts['store']}, {commit}, {stamp}"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"burst-{stamp}.png"
    fig.savefig(path, dpi=100)
    return path


def _write_result(result: dict[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"burst-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str))
    return path


if __name__ == "__main__":
    sys.exit(main())
