"""Delivery benchmark: croupier's sustained delivery rate and publish-to-receipt latency,
measured against a raw aiohttp client that POSTs to the same local receiver in the same run.

``make bench`` runs it (``.venv/bin/python bench/delivery.py``). Seven phases; each one that
involves croupier starts a fresh ``croupier serve`` on a fresh SQLite file:

1. baseline: a raw aiohttp client (own process, uvloop, one session, concurrency 64,
   kept-alive) POSTs ~1 KiB JSON bodies to the receiver -> POSTs/s; measured again right
   after (2), and the mean of the two is the baseline;
2. throughput: 20,000 events published as fast as croupier accepts them, each fanned out to
   10 endpoints (200,000 deliveries) -> sustained deliveries/s and its ratio to (1);
3. latency: 1 endpoint, a steady 500 events/s for 20 s on an absolute schedule, each event
   carrying its publish start time -> receipt minus publish start: p50/p95/p99/max;
4. the same with 10 endpoints (5,000 deliveries/s), reported separately;
5. drain (informational): events stored with the dispatcher off, then delivered by a
   restarted croupier with nothing else to do -> the dispatcher's own rate;
6. dialects: the drain once per signing dialect (bearer, which signs nothing, first and
   last) -> deliveries/s per dialect and what signing costs each against bearer;
7. signing (in this process): verifications/s of croupier's receiver SDK against the
   ``standardwebhooks`` package on the same 1 KiB payload, and CPU per signature per
   dialect (``bench/signing.py``).

Everything listens on 127.0.0.1. Every loop is bounded in count and in time, each phase has a
time budget, and the whole run a hard deadline. Child processes get SIGTERM, then SIGKILL,
even on errors; the temporary directory is removed. The figures are printed as a table and
written to ``bench/results/delivery-<timestamp>.json``, also when a phase failed.

The same file is the receiver (``delivery.py receiver``) and the raw client
(``delivery.py raw-client URL COUNT DEADLINE_S CONCURRENCY``), so that each runs in its own
process with its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import orjson
from aiohttp import web

HOST = "127.0.0.1"
SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
EVENT_TYPE = "bench.tick"

TARGET_RATIO = 0.35
TARGET_P99_MS = 50.0
#: A latency run counts only if croupier accepted at least this share of the offered rate.
RATE_TOLERANCE = 0.95

#: The whole run ends by then. Each phase also has its own budget (seconds); a phase that
#: does not fit in what is left is skipped, one that overruns is cut off and reported so.
RUN_DEADLINE_S = 570.0
BUDGET_S = {
    "baseline": 45.0,
    "throughput": 320.0,
    "latency": 75.0,
    "drain": 60.0,
    "dialects": 150.0,
    "signing": 90.0,
}
#: Signing may cost a dialect at most this share of the delivery rate (against bearer,
#: which signs nothing), and the receiver SDK must verify at least as fast as the package.
MAX_SIGNING_COST = 0.10
MIN_VERIFY_RATIO = 1.0
#: The order the dialect drains run in: bearer (no signature) first and last, so that the
#: machine's drift shows, and the others are compared with the mean of the two.
DIALECT_ORDER = ("bearer", "standard", "ed25519", "hmac-hex", "bearer")
PROGRESS_EVERY_S = 2.0
#: Waiting for deliveries gives up when nothing new arrived for this long.
STALL_S = 20.0
#: Filler in each event's data, so that a delivered envelope is about 1 KiB like the raw
#: client's bodies: both sides of the ratio move the same bytes per request.
PAD = "x" * 600
RAW_BODY_BYTES = 1024

T = TypeVar("T")


# -- entry ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the role: the driver by default, or one of its helper processes."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["receiver"]:
        _run(run_receiver())
        return 0
    if args[:1] == ["raw-client"]:
        url, count, deadline_s, concurrency = args[1], int(args[2]), float(args[3]), int(args[4])
        result = _run(run_raw_client(url, count, deadline_s, concurrency))
        print(json.dumps(result), flush=True)
        return 0
    return _run(run_driver(_parse_options(args)))


@dataclass(frozen=True)
class Options:
    events: int = 20_000
    endpoints: int = 10
    publish_concurrency: int = 24
    raw_requests: int = 60_000
    raw_concurrency: int = 64
    latency_rate: int = 500
    latency_seconds: float = 20.0
    latency_warmup_seconds: float = 2.0
    fanout_latency: bool = True
    drain_events: int = 3_000
    dialect_events: int = 4_000
    verify: bool = True
    profile_dir: Path | None = None
    keep_temp: bool = False
    strict: bool = False


def _parse_options(argv: Sequence[str]) -> Options:
    d = Options()
    p = argparse.ArgumentParser(description="croupier delivery benchmark (see docs/benchmarks.md)")
    p.add_argument("--events", type=int, default=d.events, help="throughput: events; 0 skips")
    p.add_argument("--endpoints", type=int, default=d.endpoints, help="throughput: fan-out")
    p.add_argument("--publish-concurrency", type=int, default=d.publish_concurrency)
    p.add_argument("--raw-requests", type=int, default=d.raw_requests, help="baseline; 0 skips")
    p.add_argument("--raw-concurrency", type=int, default=d.raw_concurrency)
    p.add_argument("--latency-rate", type=int, default=d.latency_rate, help="events per second")
    p.add_argument(
        "--latency-seconds", type=float, default=d.latency_seconds, help="measured; 0 skips"
    )
    p.add_argument("--latency-warmup-seconds", type=float, default=d.latency_warmup_seconds)
    p.add_argument("--no-fanout-latency", action="store_true", help="skip latency x10")
    p.add_argument("--drain-events", type=int, default=d.drain_events, help="0 skips the phase")
    p.add_argument(
        "--dialect-events",
        type=int,
        default=d.dialect_events,
        help="events per signing dialect, drained as in the drain phase; 0 skips",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the signing/verifying phase")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each croupier phase with py-spy into DIR (folded stacks; extra py-spy "
        "flags from BENCH_PY_SPY_ARGS, e.g. --gil)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the SQLite files and logs")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    a = p.parse_args(argv)
    return Options(
        events=a.events,
        endpoints=a.endpoints,
        publish_concurrency=a.publish_concurrency,
        raw_requests=a.raw_requests,
        raw_concurrency=a.raw_concurrency,
        latency_rate=a.latency_rate,
        latency_seconds=a.latency_seconds,
        latency_warmup_seconds=a.latency_warmup_seconds,
        fanout_latency=not a.no_fanout_latency,
        drain_events=a.drain_events,
        dialect_events=a.dialect_events,
        verify=not a.no_verify,
        profile_dir=a.profile,
        keep_temp=a.keep_temp,
        strict=a.strict,
    )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


# -- the driver ----------------------------------------------------------------------------


@dataclass
class Bench:
    """What every phase works with."""

    opts: Options
    children: Children
    session: aiohttp.ClientSession
    receiver: Receiver
    workdir: Path

    def croupier(
        self, name: str, *, db: str | None = None, env: dict[str, str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[Croupier]:
        return Croupier.running(self, name, db=db or name, env=env or {})


async def run_driver(opts: Options) -> int:
    """Run the phases, print the table, write the JSON; 0 unless ``--strict`` and a miss."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="croupier-bench-"))
    children = Children()
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, main_task.cancel)
    result: dict[str, Any] = {
        "started_at": started.isoformat(),
        "machine": _machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in opts.__dict__.items()},
        "croupier_env": _passed_through_env(),
        "source": await _source(),
    }
    _say(f"croupier delivery benchmark; work dir {workdir}; deadline {RUN_DEADLINE_S:.0f} s")
    try:
        async with (
            asyncio.timeout(RUN_DEADLINE_S),
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=128),
                timeout=aiohttp.ClientTimeout(total=120),
            ) as session,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as control,
        ):
            receiver = await Receiver.start(children, control, workdir)
            bench = Bench(opts, children, session, receiver, workdir)
            phases: list[tuple[str, float, Callable[[], Awaitable[dict[str, Any]]]]] = []
            if opts.raw_requests > 0:
                phases.append(("baseline", BUDGET_S["baseline"], lambda: phase_baseline(bench)))
            if opts.events > 0:
                phases.append(
                    ("throughput", BUDGET_S["throughput"], lambda: phase_throughput(bench))
                )
            if opts.raw_requests > 0 and opts.events > 0:
                # Again after the throughput run, which the two then bracket: the machine
                # is shared, and its speed drifts within a run.
                phases.append(
                    ("baseline_after", BUDGET_S["baseline"], lambda: phase_baseline(bench))
                )
            if opts.latency_seconds > 0:
                phases.append(
                    ("latency_1", BUDGET_S["latency"], lambda: phase_latency(bench, endpoints=1))
                )
            if opts.latency_seconds > 0 and opts.fanout_latency:
                phases.append(
                    ("latency_10", BUDGET_S["latency"], lambda: phase_latency(bench, endpoints=10))
                )
            if opts.drain_events > 0:
                phases.append(("drain", BUDGET_S["drain"], lambda: phase_drain(bench)))
            if opts.dialect_events > 0:
                phases.append(("dialects", BUDGET_S["dialects"], lambda: phase_dialects(bench)))
            if opts.verify:
                phases.append(("signing", BUDGET_S["signing"], phase_signing))
            for key, budget, run in phases:
                left = RUN_DEADLINE_S - (time.monotonic() - t0) - 20.0
                if left < min(budget, 60.0):
                    result[key] = {"error": f"skipped: {left:.0f} s left of the run's deadline"}
                    _say(f"[{key}] {result[key]['error']}")
                    continue
                result[key] = await _phase(key, min(budget, left), run)
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
        _print_table(result)
        _say(f"wrote {_write_result(result, started)}")
    missed = any(v["verdict"] == "FAIL" for v in result["verdicts"])
    return 2 if opts.strict and missed else 0


async def _phase(
    key: str, budget_s: float, run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """One phase within its budget; a failure is recorded and the next phase still runs."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(budget_s):
            out = await run()
    except TimeoutError:
        out = {"error": f"cut off at its budget of {budget_s:.0f} s"}
    except (OSError, RuntimeError, aiohttp.ClientError, ValueError, KeyError) as exc:
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["phase_seconds"] = time.monotonic() - t0
    if "error" in out:
        _say(f"[{key}] failed: {out['error']}")
    return out


# -- phase: the raw client -------------------------------------------------------------------


async def phase_baseline(b: Bench) -> dict[str, Any]:
    opts = b.opts
    _say(
        f"[baseline] raw aiohttp client: {opts.raw_requests} POSTs of {RAW_BODY_BYTES} B, "
        f"concurrency {opts.raw_concurrency}"
    )
    await b.receiver.reset()
    deadline_s = 30.0
    proc = await b.children.spawn(
        "raw-client",
        [
            sys.executable,
            str(SELF),
            "raw-client",
            b.receiver.url("/raw"),
            str(opts.raw_requests),
            str(deadline_s),
            str(opts.raw_concurrency),
        ],
        stdout=asyncio.subprocess.PIPE,
    )
    cpu = CpuMeter({"receiver": b.receiver.pid})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), deadline_s + 10)
    finally:
        cpu_use = cpu.stop()
        await b.children.stop(proc)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"raw client exited with {proc.returncode}")
    raw: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    summary = await b.receiver.summary({})
    # The client reports its own CPU time: it has exited before the meter stops.
    cpu_use["raw_client"] = {"cpu_s": raw["cpu_s"], "cores": raw["cpu_s"] / cpu_use["wall_s"]}
    raw["cpu"] = cpu_use
    raw["receiver"] = {k: summary[k] for k in ("count", "duplicates", "mean_body_bytes")}
    _say(
        f"[baseline] {raw['requests']} POSTs in {raw['seconds']:.2f} s = "
        f"{raw['rate']:,.0f} POSTs/s ({raw['errors']} errors)"
    )
    return raw


# -- phase: throughput -----------------------------------------------------------------------


async def phase_throughput(b: Bench) -> dict[str, Any]:
    label, opts = "[throughput]", b.opts
    _say(f"{label} {opts.events} events x {opts.endpoints} endpoints on a fresh SQLite file")
    async with b.croupier("throughput") as croupier:
        paths = [f"/t/{i}" for i in range(opts.endpoints)]
        await croupier.prepare(b.receiver, paths, fields=_dialect_fields(os.environ))
        await b.receiver.reset()
        stats = PublishStats()
        cpu = CpuMeter(
            {"croupier": croupier.pid, "receiver": b.receiver.pid, "driver": os.getpid()}
        )
        async with _profiled(opts, croupier.pid, "throughput"):
            origin = time.time()
            progress = _progress(label, b.receiver, stats, opts.events, opts.events * len(paths))
            try:
                await publish_burst(
                    croupier, stats, opts.events, opts.publish_concurrency, deadline_s=240.0
                )
                publish_end = time.time()
                await wait_for_deliveries(b.receiver, stats.deliveries, deadline_s=60.0)
            finally:
                progress.cancel()
                cpu_use = cpu.stop()
    summary = await b.receiver.summary(
        {"origin": origin, "after": publish_end, "expected_ids": stats.ids, "paths": paths}
    )
    out: dict[str, Any] = {
        "events_requested": opts.events,
        "endpoints": opts.endpoints,
        "publish_concurrency": opts.publish_concurrency,
        "publish": stats.report(),
        **_delivery_figures(summary, stats.deliveries),
        "deliveries_after_publish_end": summary.get("after_count", 0),
        "seconds_to_deliver_all": summary.get("last", origin) - origin,
        "first_delivery_after_s": summary.get("first", origin) - origin,
        "per_second": summary.get("per_second", []),
        "cpu": cpu_use,
    }
    after_span = summary.get("last", 0.0) - publish_end
    out["deliveries_per_s_after_publish_end"] = (
        out["deliveries_after_publish_end"] / after_span if after_span > 1.0 else None
    )
    _say(
        f"{label} {out['unique_pairs']}/{out['deliveries_expected']} delivered, "
        f"{out['duplicates']} duplicates, {out['deliveries_per_s_p5_p95']:,.0f} deliveries/s "
        f"(p5-p95), all in {out['seconds_to_deliver_all']:.1f} s"
    )
    return out


def _delivery_figures(summary: dict[str, Any], expected: int) -> dict[str, Any]:
    """Completeness and rates from the receiver's summary of one phase."""
    n = summary["count"]
    window = summary.get("p95_at", 0.0) - summary.get("p5_at", 0.0)
    in_window = summary.get("p95_index", 0) - summary.get("p5_index", 0)
    span = summary.get("last", 0.0) - summary.get("first", 0.0)
    return {
        "deliveries_expected": expected,
        "deliveries_received": n,
        "unique_pairs": summary["unique"],
        "duplicates": summary["duplicates"],
        "missing": summary.get("missing"),
        "unexpected": summary.get("unexpected"),
        # Publishes abandoned by the client may still have been stored and delivered; they
        # show as "unexpected" and do not count against completeness.
        "all_delivered": summary.get("missing") == 0,
        "deliveries_per_s_p5_p95": in_window / window if window > 0 else 0.0,
        "deliveries_per_s_first_last": (n - 1) / span if span > 0 else 0.0,
        "mean_body_bytes": summary["mean_body_bytes"],
    }


# -- phase: latency --------------------------------------------------------------------------


async def phase_latency(b: Bench, *, endpoints: int) -> dict[str, Any]:
    opts = b.opts
    label = f"[latency x{endpoints}]"
    rate = opts.latency_rate
    warmup = int(rate * opts.latency_warmup_seconds)
    measured = int(rate * opts.latency_seconds)
    _say(
        f"{label} {rate} events/s to {endpoints} endpoint(s): "
        f"{opts.latency_warmup_seconds:g} s warm-up, then {opts.latency_seconds:g} s measured"
    )
    async with b.croupier(f"latency{endpoints}") as croupier:
        paths = [f"/l{endpoints}/{i}" for i in range(endpoints)]
        await croupier.prepare(b.receiver, paths)
        await b.receiver.reset()
        stats = PublishStats()
        total = warmup + measured
        cpu = CpuMeter(
            {"croupier": croupier.pid, "receiver": b.receiver.pid, "driver": os.getpid()}
        )
        async with _profiled(opts, croupier.pid, f"latency{endpoints}"):
            progress = _progress(label, b.receiver, stats, total, total * endpoints)
            try:
                await publish_paced(croupier, stats, total, rate, settle_s=20.0)
                await wait_for_deliveries(b.receiver, stats.deliveries, deadline_s=20.0)
            finally:
                progress.cancel()
                cpu_use = cpu.stop()
    summary = await b.receiver.summary(
        {"latency_min_seq": warmup, "expected_ids": stats.ids, "paths": paths}
    )
    publish = stats.report()
    lat = summary["latency_ms"]
    out: dict[str, Any] = {
        "endpoints": endpoints,
        "offered_events_per_s": rate,
        "offered_deliveries_per_s": rate * endpoints,
        "warmup_events": warmup,
        "measured_events": measured,
        "publish": publish,
        "accepted_share": publish["rate"] / rate if rate else 0.0,
        **_delivery_figures(summary, stats.deliveries),
        "latency_ms": lat,
        "latency_with_warmup_ms": summary["latency_all_ms"],
        "cpu": cpu_use,
    }
    _say(
        f"{label} receipt - publish start over {lat['count']} deliveries: p50 {lat['p50']:.1f} "
        f"ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms; "
        f"croupier accepted {publish['rate']:.0f} events/s of {rate} offered"
    )
    return out


# -- phase: dialects and signing -------------------------------------------------------------


async def phase_dialects(b: Bench) -> dict[str, Any]:
    """The drain phase once per signing dialect: what signing costs the delivery rate."""
    runs: list[dict[str, Any]] = []
    for i, dialect in enumerate(DIALECT_ORDER):
        out = await phase_drain(
            b,
            events=b.opts.dialect_events,
            dialect=dialect,
            label=f"[dialect {dialect}]",
            db=f"dialect-{i}-{dialect}",
        )
        runs.append({"dialect": dialect, **out})
    unsigned = [r["deliveries_per_s_p5_p95"] for r in runs if r["dialect"] == "bearer"]
    base = sum(unsigned) / len(unsigned)
    rates = {r["dialect"]: r["deliveries_per_s_p5_p95"] for r in runs if r["dialect"] != "bearer"}
    rates["bearer"] = base
    return {
        "runs": runs,
        "deliveries_per_s": rates,
        "cost_vs_bearer": {d: 1 - rate / base for d, rate in rates.items() if d != "bearer"},
    }


async def phase_signing() -> dict[str, Any]:
    """In this process, with nothing else running: verify rate and signing CPU per dialect."""
    from signing import measure_signing, measure_verify

    _say("[signing] verifications/s: croupier.receiver against standardwebhooks, 1 KiB")
    verify = await asyncio.to_thread(measure_verify)
    _say(
        f"[signing] verify: SDK {verify['sdk_per_s']:,.0f}/s, package "
        f"{verify['standardwebhooks_per_s']:,.0f}/s = {verify['ratio']:.2f}x"
    )
    sign = await asyncio.to_thread(measure_signing)
    return {"verify": verify, "sign": sign}


# -- phase: drain ----------------------------------------------------------------------------


async def phase_drain(
    b: Bench,
    *,
    events: int | None = None,
    dialect: str | None = None,
    label: str = "[drain]",
    db: str = "drain",
) -> dict[str, Any]:
    """The dispatcher alone: store events with it off, then time a restart that delivers them."""
    opts = b.opts
    events = opts.drain_events if events is None else events
    paths = [f"/d/{i}" for i in range(opts.endpoints)]
    _say(f"{label} store {events} events x {len(paths)} endpoints with the dispatcher off")
    stats = PublishStats()
    off = {"CROUPIER_DISPATCHER_ENABLED": "false"}
    fields = {"dialect": dialect} if dialect is not None else {}
    async with b.croupier(f"{db}-fill", db=db, env=off) as croupier:
        await croupier.prepare(b.receiver, paths, fields=fields)
        await publish_burst(croupier, stats, events, opts.publish_concurrency, deadline_s=30.0)
    await b.receiver.reset()
    _say(f"{label} restart with the dispatcher on; deliver {stats.deliveries}")
    async with b.croupier(db, db=db) as croupier:
        cpu = CpuMeter({"croupier": croupier.pid, "receiver": b.receiver.pid})
        async with _profiled(opts, croupier.pid, "drain"):
            progress = _progress(label, b.receiver, stats, events, stats.deliveries)
            try:
                await wait_for_deliveries(b.receiver, stats.deliveries, deadline_s=25.0)
            finally:
                progress.cancel()
                cpu_use = cpu.stop()
    summary = await b.receiver.summary({"expected_ids": stats.ids, "paths": paths})
    out: dict[str, Any] = {
        "events": stats.accepted,
        "endpoints": len(paths),
        **_delivery_figures(summary, stats.deliveries),
        "cpu": cpu_use,
    }
    _say(
        f"{label} {out['unique_pairs']}/{out['deliveries_expected']} delivered at "
        f"{out['deliveries_per_s_p5_p95']:,.0f}/s (p5-p95)"
    )
    return out


# -- publishing ------------------------------------------------------------------------------


@dataclass
class PublishStats:
    """What the publishing client saw: accepted ids, errors, and the 202 round trips."""

    accepted: int = 0
    deliveries: int = 0
    errors: int = 0
    abandoned: int = 0
    first_error: str | None = None
    ids: list[str] = field(default_factory=list)
    round_trips_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    max_schedule_lag_ms: float | None = None

    def ok(self, body: dict[str, Any], round_trip_s: float) -> None:
        self.accepted += 1
        self.deliveries += int(body["deliveries"])
        self.ids.append(str(body["id"]))
        self.round_trips_ms.append(round_trip_s * 1000)
        self.finished = time.monotonic()

    def failed(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what[:300]

    def report(self) -> dict[str, Any]:
        seconds = max(0.0, self.finished - self.started)
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "errors": self.errors,
            "abandoned": self.abandoned,
            "first_error": self.first_error,
            "seconds": seconds,
            "rate": self.accepted / seconds if seconds > 0 else 0.0,
            "round_trip_ms": _distribution(sorted(self.round_trips_ms)),
        }
        if self.max_schedule_lag_ms is not None:
            out["max_schedule_lag_ms"] = self.max_schedule_lag_ms
        return out


async def publish_burst(
    croupier: Croupier, stats: PublishStats, count: int, concurrency: int, *, deadline_s: float
) -> None:
    """Publish ``count`` events as fast as croupier accepts them, ``concurrency`` at a time."""
    deadline = time.monotonic() + deadline_s
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < deadline:
            seq = issued
            issued += 1
            await croupier.publish(stats, seq)

    stats.started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if issued < count:
        _say(f"publishing stopped at its deadline after {issued} of {count} events")


async def publish_paced(
    croupier: Croupier, stats: PublishStats, count: int, rate: int, *, settle_s: float
) -> None:
    """Start event i at exactly start + i/rate, whatever happened to the earlier ones.

    The schedule is absolute, so lateness never accumulates, and it never waits for
    croupier's answers: an event that croupier is slow to accept counts its wait in its
    latency (no coordinated omission). Publishes still open ``settle_s`` after the last
    start are abandoned and counted.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    lag = 0.0
    start = loop.time() + 0.05
    stats.started = time.monotonic() + 0.05
    for seq in range(count):
        delay = start + seq / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        if -delay > 5.0:
            _say(f"the publisher itself fell 5 s behind; stopped after {seq} of {count} events")
            break
        task = asyncio.create_task(croupier.publish(stats, seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    stats.max_schedule_lag_ms = lag * 1000
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=settle_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            stats.abandoned = len(late)
            _say(f"abandoned {len(late)} publishes still open {settle_s:.0f} s after the last")


async def wait_for_deliveries(receiver: Receiver, expected: int, *, deadline_s: float) -> None:
    """Until the receiver holds ``expected`` distinct (endpoint, event) pairs, the deadline
    passes, or nothing new arrived for :data:`STALL_S`."""
    deadline = time.monotonic() + deadline_s
    last_unique, last_change = -1, time.monotonic()
    while True:
        unique = (await receiver.stats())["unique"]
        now = time.monotonic()
        if unique >= expected:
            return
        if unique != last_unique:
            last_unique, last_change = unique, now
        if now > deadline:
            _say(f"gave up waiting at the deadline: {unique}/{expected} delivered")
            return
        if now - last_change > STALL_S:
            _say(f"gave up waiting: nothing new for {STALL_S:.0f} s at {unique}/{expected}")
            return
        await asyncio.sleep(0.05)


def _progress(
    label: str, receiver: Receiver, stats: PublishStats, events: int, deliveries: int
) -> asyncio.Task[None]:
    async def report() -> None:
        previous, t_prev = 0, time.monotonic()
        for _ in range(int(RUN_DEADLINE_S / PROGRESS_EVERY_S)):
            await asyncio.sleep(PROGRESS_EVERY_S)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                got = (await receiver.stats())["count"]
                now = time.monotonic()
                rate = (got - previous) / (now - t_prev)
                previous, t_prev = got, now
                _say(
                    f"{label} published {stats.accepted}/{events} ({stats.errors} errors), "
                    f"received {got}/{deliveries} ({rate:,.0f}/s)"
                )

    return asyncio.create_task(report())


# -- croupier --------------------------------------------------------------------------------


async def wait_healthy(
    proc: asyncio.subprocess.Process,
    session: aiohttp.ClientSession,
    base: str,
    *,
    within_s: float,
) -> None:
    """Until croupier at ``base`` answers ``GET /health``; fails if it exits or takes longer."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"croupier exited with {proc.returncode} at start")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(
                base + "/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"croupier not healthy within {within_s:.0f} s")


class Croupier:
    """One ``croupier serve`` subprocess on its own SQLite file, and a client for it."""

    def __init__(
        self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession, port: int
    ) -> None:
        self.proc = proc
        self.session = session
        self.base = f"http://{HOST}:{port}"
        self.headers = {
            "Authorization": f"Bearer {_ADMIN_KEY}",
            "Content-Type": "application/json",
        }

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, b: Bench, name: str, *, db: str, env: dict[str, str]
    ) -> AsyncIterator[Croupier]:
        port = _free_port()
        log_path = b.workdir / f"{name}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
        full_env["CROUPIER_LOG_LEVEL"] = "warning"
        full_env.update(_passed_through_env())
        full_env.update(env)
        full_env.update(
            {
                "CROUPIER_DATABASE_URL": f"sqlite:///{b.workdir / f'{db}.db'}",
                "CROUPIER_ADMIN_KEY": _ADMIN_KEY,
                "CROUPIER_ENVIRONMENT": "bench",
                # A free port, never the default one another croupier may hold.
                "CROUPIER_GRPC_PORT": "0",
            }
        )
        # --dev: the bench's receiver listens on this machine's loopback address.
        argv = [
            *(sys.executable, "-m", "croupier.cli", "serve", "--dev"),
            *("--host", HOST, "--port", str(port)),
        ]
        log = _open_log(log_path)
        try:
            proc = await b.children.spawn(
                f"croupier-{name}", argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=full_env
            )
        finally:
            log.close()
        croupier = cls(proc, b.session, port)
        try:
            await croupier._wait_ready(within_s=60.0)
            yield croupier
        except BaseException:
            _say(f"croupier log ({log_path.name}), last lines:\n{_tail(log_path)}")
            raise
        finally:
            await b.children.stop(proc, grace_s=20.0)

    async def _wait_ready(self, *, within_s: float) -> None:
        await wait_healthy(self.proc, self.session, self.base, within_s=within_s)

    async def call(self, method: str, path: str, body: Any) -> Any:
        async with self.session.request(
            method, self.base + path, data=orjson.dumps(body), headers=self.headers
        ) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
            return orjson.loads(raw) if raw else None

    async def prepare(
        self, receiver: Receiver, paths: Sequence[str], *, fields: dict[str, Any] | None = None
    ) -> None:
        """A permissive event type (so data can carry a send time) and one endpoint per path
        (with ``fields`` added to each, e.g. a signing dialect)."""
        schema = {"type": "object"}
        await self.call(
            "PUT",
            f"/v1/event-types/{EVENT_TYPE}",
            {"schema": schema, "schema_version": "1.0.0", "description": "benchmark tick"},
        )
        for path in paths:
            await self.call(
                "POST",
                "/v1/endpoints",
                {
                    "url": receiver.url(path),
                    "event_types": [EVENT_TYPE],
                    "description": path,
                    **(fields or {}),
                },
            )

    async def publish(self, stats: PublishStats, seq: int) -> None:
        """One event whose data carries its publish start time (``time.time()``)."""
        sent_at = time.time()
        t0 = time.perf_counter()
        body = orjson.dumps(
            {"type": EVENT_TYPE, "data": {"sent_at": sent_at, "seq": seq, "pad": PAD}}
        )
        try:
            async with self.session.post(
                self.base + "/v1/events", data=body, headers=self.headers
            ) as resp:
                raw = await resp.read()
                if resp.status == 202:
                    stats.ok(orjson.loads(raw), time.perf_counter() - t0)
                else:
                    stats.failed(f"{resp.status}: {raw[:200]!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.failed(f"{type(exc).__name__}: {exc}")


_ADMIN_KEY = "bench_" + secrets.token_urlsafe(24)


def _passed_through_env() -> dict[str, str]:
    """``CROUPIER_*`` tuning knobs from the caller's environment, to try settings with."""
    own = {"CROUPIER_DATABASE_URL", "CROUPIER_ADMIN_KEY", "CROUPIER_HOST", "CROUPIER_PORT"}
    return {k: v for k, v in os.environ.items() if k.startswith("CROUPIER_") and k not in own}


# -- the receiver ----------------------------------------------------------------------------


class Receiver:
    """The driver's handle on the receiver process (control calls on their own session, so
    a flood of publishes never queues them)."""

    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.session = session
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls, children: Children, session: aiohttp.ClientSession, workdir: Path
    ) -> Receiver:
        proc, port = await spawn_listener(
            children, "receiver", [sys.executable, str(SELF), "receiver"], workdir / "receiver.log"
        )
        self = cls(proc, session)
        self.port = port
        _say(f"receiver listening on {self.url('/')} (pid {proc.pid})")
        return self

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.url(path), data=data) as resp:
            resp.raise_for_status()
            out: dict[str, Any] = orjson.loads(await resp.read())
            return out

    async def reset(self) -> None:
        await self._control("POST", "/_reset")

    async def stats(self) -> dict[str, Any]:
        return await self._control("GET", "/_stats")

    async def summary(self, query: dict[str, Any]) -> dict[str, Any]:
        return await self._control("POST", "/_summary", query)


async def spawn_listener(
    children: Children, name: str, argv: Sequence[str], log_path: Path
) -> tuple[asyncio.subprocess.Process, int]:
    """Start a child that prints ``PORT <n>`` once it listens (its stderr to ``log_path``);
    return it and ``n``."""
    log = _open_log(log_path)
    try:
        proc = await children.spawn(name, argv, stdout=asyncio.subprocess.PIPE, stderr=log)
    finally:
        log.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"PORT "):
        raise RuntimeError(f"{name} did not start: {line!r}")
    return proc, int(line.split()[1])


async def run_receiver() -> None:
    """Answer every POST with 200 at once and record it; ``/_...`` paths are for the driver.

    It exits on SIGTERM, when its parent goes away, or after the run's deadline.
    """
    app = ReceiverApp()
    server = web.Server(app.handle, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, HOST, 0, backlog=4096)
    print(f"PORT {listener.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_exit_with_parent(stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), RUN_DEADLINE_S + 120)
    watchdog.cancel()
    listener.close()
    await server.shutdown(1.0)


class ReceiverApp:
    """The receiver's one handler: webhooks on any path, control under ``/_``."""

    def __init__(self) -> None:
        self.recorder = Recorder()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        now = time.time()
        if request.path.startswith("/_"):
            return await self._control(request)
        body = await request.read()
        self.recorder.record(now, request.path, request.headers.get("webhook-id", ""), body)
        return web.Response(body=b"ok")

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/_reset":
            self.recorder = Recorder()
            return _json({"ok": True})
        if request.path == "/_stats":
            return _json(self.recorder.stats())
        if request.path == "/_summary":
            query = orjson.loads(await request.read() or b"{}")
            return _json(self.recorder.summary(query))
        return web.Response(status=404)


class Recorder:
    """What the receiver saw since its last reset."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.pairs: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.body_bytes = 0
        self.paths: Counter[str] = Counter()
        #: (seq, receipt - publish start in seconds) for bodies whose data has ``sent_at``
        self.latencies: list[tuple[int, float]] = []

    def record(self, now: float, path: str, webhook_id: str, body: bytes) -> None:
        self.arrivals.append(now)
        self.body_bytes += len(body)
        self.paths[path] += 1
        pair = (path, webhook_id)
        if pair in self.pairs:
            self.duplicates += 1
        else:
            self.pairs.add(pair)
        try:
            data = orjson.loads(body).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(data, dict) and "sent_at" in data:
            self.latencies.append((int(data.get("seq", 0)), now - float(data["sent_at"])))

    def stats(self) -> dict[str, Any]:
        return {
            "count": len(self.arrivals),
            "unique": len(self.pairs),
            "duplicates": self.duplicates,
        }

    def summary(self, query: dict[str, Any]) -> dict[str, Any]:
        """Rates, completeness against ``expected_ids`` x ``paths``, latency percentiles."""
        arrivals = sorted(self.arrivals)
        n = len(arrivals)
        out: dict[str, Any] = {
            **self.stats(),
            "mean_body_bytes": self.body_bytes / n if n else 0.0,
            "per_path": dict(self.paths),
        }
        if n:
            i5, i95 = _rank(n, 5), _rank(n, 95)
            origin = float(query.get("origin") or arrivals[0])
            buckets = Counter(max(0, int(a - origin)) for a in arrivals)
            out.update(
                first=arrivals[0],
                last=arrivals[-1],
                p5_index=i5,
                p5_at=arrivals[i5],
                p95_index=i95,
                p95_at=arrivals[i95],
                per_second=[buckets.get(s, 0) for s in range(max(buckets) + 1)],
            )
            if query.get("after") is not None:
                out["after_count"] = n - bisect.bisect_left(arrivals, float(query["after"]))
        ids, paths = query.get("expected_ids"), query.get("paths")
        if ids is not None and paths is not None:
            expected = {(p, i) for p in paths for i in ids}
            out["missing"] = len(expected - self.pairs)
            out["unexpected"] = len(self.pairs - expected)
        min_seq = int(query.get("latency_min_seq", 0))
        measured = sorted(lat * 1000 for seq, lat in self.latencies if seq >= min_seq)
        out["latency_ms"] = _distribution(measured)
        out["latency_all_ms"] = _distribution(sorted(lat * 1000 for _, lat in self.latencies))
        return out


async def _exit_with_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


# -- the raw client --------------------------------------------------------------------------


async def run_raw_client(
    url: str, count: int, deadline_s: float, concurrency: int
) -> dict[str, Any]:
    """POST ``count`` bodies of ~1 KiB over one kept-alive session, ``concurrency`` at a time.
    A warm-up opens the connections first and is not counted."""
    envelope = {"id": "raw", "type": "bench.raw", "data": {"pad": ""}}
    filler = RAW_BODY_BYTES - len(orjson.dumps(envelope))
    body = orjson.dumps({**envelope, "data": {"pad": "x" * max(0, filler)}})
    warmup = min(count // 10, concurrency * 20)
    errors = 0
    issued = 0
    end = time.monotonic() + deadline_s
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def blast(total: int, prefix: str) -> None:
            nonlocal issued, errors
            while issued < total and time.monotonic() < end:
                i = issued
                issued += 1
                headers = {"Content-Type": "application/json", "webhook-id": f"{prefix}{i}"}
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1

        await asyncio.gather(*(blast(warmup, "warm_") for _ in range(concurrency)))
        issued, errors = 0, 0
        t0 = time.monotonic()
        await asyncio.gather(*(blast(count, "raw_") for _ in range(concurrency)))
        seconds = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "requests": issued,
        "errors": errors,
        "seconds": seconds,
        "rate": issued / seconds if seconds > 0 else 0.0,
        "body_bytes": len(body),
        "concurrency": concurrency,
        "warmup_requests": warmup,
    }


# -- processes -------------------------------------------------------------------------------


class Children:
    """Every subprocess the driver started; each is stopped with SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self._procs: dict[int, asyncio.subprocess.Process] = {}

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=ROOT
        )
        self._procs[proc.pid] = proc
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, *, grace_s: float = 5.0) -> None:
        self._procs.pop(proc.pid, None)
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            _say(f"pid {proc.pid} ignored SIGTERM for {grace_s:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 5.0)

    async def stop_all(self) -> None:
        for proc in list(self._procs.values()):
            try:
                await self.stop(proc)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()


class CpuMeter:
    """CPU seconds that processes use from now until :meth:`stop` (Linux /proc).

    ``croupier`` counts with its live descendants (its sender child), and is also reported
    alone as ``croupier_main``; every other process counts alone.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        if "croupier" in pids:
            self.pids["croupier_main"] = pids["croupier"]
        self._t0 = time.monotonic()
        self._start = {name: _cpu_seconds(name, pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        out: dict[str, Any] = {"wall_s": wall}
        for name, pid in self.pids.items():
            before, after = self._start.get(name), _cpu_seconds(name, pid)
            if before is not None and after is not None and wall > 0:
                out[name] = {"cpu_s": after - before, "cores": (after - before) / wall}
        return out


def _cpu_seconds(name: str, pid: int) -> float | None:
    own = _own_cpu_seconds(pid)
    if own is None or name != "croupier":
        return own
    return own + sum(_own_cpu_seconds(child) or 0.0 for child in _descendants(pid))


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            for child in map(int, children.read_text().split()):
                found += [child, *_descendants(child)]
    return found


def _own_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm)", utime and stime are the 12th and 13th fields.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def _profiled(opts: Options, pid: int, name: str) -> AsyncIterator[None]:
    """With ``--profile DIR``: py-spy samples ``pid`` and each process it started (the sender
    child) for the span of the block, one folded-stacks file per process."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if opts.profile_dir is None or py_spy is None:
        if opts.profile_dir is not None:
            _say("py-spy not found (pip install py-spy); not profiling")
        yield
        return
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    extra = os.environ.get("BENCH_PY_SPY_ARGS", "").split()
    targets = {name: pid} | {f"{name}-child{i}": c for i, c in enumerate(_descendants(pid), 1)}
    samplers: dict[Path, asyncio.subprocess.Process] = {}
    for label, target in targets.items():
        out = opts.profile_dir / f"{label}.folded"
        argv = [py_spy, "record", "--pid", str(target), "--rate", "250", "--format", "raw"]
        samplers[out] = await asyncio.create_subprocess_exec(
            *argv, "--nonblocking", "--output", str(out), *extra,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield
    finally:
        for out, proc in samplers.items():
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            _say(f"profile of {name}: {out}")


# -- report ----------------------------------------------------------------------------------


def _raw_rates(result: dict[str, Any]) -> list[float]:
    """The raw client's rate before the throughput run and, if measured, after it."""
    return [
        float(result[key]["rate"])
        for key in ("baseline", "baseline_after")
        if "rate" in result.get(key, {})
    ]


def _raw_rate(result: dict[str, Any]) -> float:
    """The baseline croupier is compared with: the mean of the raw client's rates."""
    rates = _raw_rates(result)
    return sum(rates) / len(rates) if rates else 0.0


def _verdicts(result: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    raw = _raw_rate(result)
    result["raw_client_rate"] = raw
    tp = result.get("throughput", {})
    if "error" not in tp and tp and raw:
        ratio = tp["deliveries_per_s_p5_p95"] / raw
        tp["ratio_to_raw_client"] = ratio
        out.append(
            {
                "check": "sustained deliveries/s >= 35% of the raw client's POSTs/s",
                "value": f"{ratio:.1%} ({tp['deliveries_per_s_p5_p95']:,.0f} vs {raw:,.0f})",
                "verdict": "PASS" if ratio >= TARGET_RATIO else "FAIL",
            }
        )
        accepted, requested = tp["publish"]["accepted"], tp["events_requested"]
        short = (
            f"; only {accepted:,} of {requested:,} events published" if accepted < requested else ""
        )
        out.append(
            {
                "check": "every (event, endpoint) pair of the throughput run delivered",
                "value": f"{tp['unique_pairs']:,}/{tp['deliveries_expected']:,}, "
                f"{tp['duplicates']} duplicates{short}",
                "verdict": "PASS" if tp["all_delivered"] and not short else "FAIL",
            }
        )
    elif "throughput" in result or "baseline" in result:
        value = tp.get("error", "not run") if raw else "no baseline"
        out.append({"check": "throughput ratio", "value": value, "verdict": "FAIL"})
    dialects = result.get("dialects", {})
    for dialect, cost in dialects.get("cost_vs_bearer", {}).items():
        out.append(
            {
                "check": f"signing costs the {dialect} dialect <= 10% of the delivery rate",
                "value": f"{cost:.1%} ({dialects['deliveries_per_s'][dialect]:,.0f} vs "
                f"{dialects['deliveries_per_s']['bearer']:,.0f}/s unsigned)",
                "verdict": "PASS" if cost <= MAX_SIGNING_COST else "FAIL",
            }
        )
    if "error" in dialects:
        out.append(
            {"check": "delivery rate per dialect", "value": dialects["error"], "verdict": "FAIL"}
        )
    verify = result.get("signing", {}).get("verify")
    if verify is not None:
        out.append(
            {
                "check": "receiver SDK verifies >= 1.0x the standardwebhooks package",
                "value": f"{verify['ratio']:.2f}x ({verify['sdk_per_s']:,.0f} vs "
                f"{verify['standardwebhooks_per_s']:,.0f}/s)",
                "verdict": "PASS" if verify["ratio"] >= MIN_VERIFY_RATIO else "FAIL",
            }
        )
    elif "error" in result.get("signing", {}):
        out.append(
            {
                "check": "receiver SDK verify rate",
                "value": result["signing"]["error"],
                "verdict": "FAIL",
            }
        )
    for key, is_target in (("latency_1", True), ("latency_10", False)):
        lat = result.get(key)
        if lat is None:
            continue
        rate = result["options"]["latency_rate"]
        check = f"p99 publish-to-receipt < 50 ms at {rate} events/s, {key[8:]} endpoint(s)"
        if not is_target:
            check += " (not a target)"
        if "error" in lat:
            out.append({"check": check, "value": lat["error"], "verdict": "FAIL"})
            continue
        p99 = lat["latency_ms"]["p99"]
        notes = []
        if lat["accepted_share"] < RATE_TOLERANCE:
            notes.append(f"croupier accepted only {lat['publish']['rate']:.0f} events/s")
        if lat["missing"]:
            notes.append(f"{lat['missing']} not delivered when the wait ended")
        ok = p99 < TARGET_P99_MS and not notes
        verdict = ("PASS" if ok else "FAIL") if is_target else ("ok" if ok else "over")
        value = "; ".join([f"{p99:,.1f} ms", *notes])
        out.append({"check": check, "value": value, "verdict": verdict})
    return out


def _print_table(result: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    rates, raw = _raw_rates(result), _raw_rate(result)
    if len(rates) == 2:
        spread = f" (before {rates[0]:,.0f}, after {rates[1]:,.0f})"
        rows.append(("raw aiohttp client, POSTs/s, mean", f"{raw:,.0f}{spread}"))
    elif rates:
        rows.append(("raw aiohttp client, POSTs/s", f"{raw:,.0f}"))
    tp = result.get("throughput", {})
    if "publish" in tp:
        pub, after = tp["publish"], tp["deliveries_per_s_after_publish_end"]
        rows += [
            ("throughput: events accepted", f"{pub['accepted']:,} ({pub['errors']} errors)"),
            ("throughput: publish rate, events/s", f"{pub['rate']:,.0f}"),
            ("throughput: deliveries/s, p5-p95 of arrivals", _n(tp["deliveries_per_s_p5_p95"])),
            ("throughput: deliveries/s, first-last", _n(tp["deliveries_per_s_first_last"])),
            ("throughput: deliveries/s after publishing ended", _n(after)),
            ("throughput: s from first publish to last receipt", _n(tp["seconds_to_deliver_all"])),
            ("throughput: ratio to the raw client", f"{tp.get('ratio_to_raw_client', 0.0):.1%}"),
            (
                "throughput: unique delivered / expected / duplicates",
                f"{tp['unique_pairs']:,} / {tp['deliveries_expected']:,} / {tp['duplicates']}",
            ),
        ]
    for key in ("latency_1", "latency_10"):
        lat = result.get(key, {})
        if "latency_ms" not in lat:
            continue
        d, name = lat["latency_ms"], f"latency x{lat['endpoints']}"
        rows += [
            (
                f"{name}: p50 / p95 / p99 / max, ms",
                f"{d['p50']:,.1f} / {d['p95']:,.1f} / {d['p99']:,.1f} / {d['max']:,.1f}",
            ),
            (
                f"{name}: deliveries measured; events/s accepted of offered",
                f"{d['count']:,}; {lat['publish']['rate']:,.0f} of {lat['offered_events_per_s']}",
            ),
        ]
    drain = result.get("drain", {}).get("deliveries_per_s_p5_p95")
    if drain is not None:
        share = f" ({drain / raw:.1%} of the raw client)" if raw else ""
        rows.append(("drain (dispatcher alone): deliveries/s, p5-p95", _n(drain) + share))
    dialects = result.get("dialects", {}).get("deliveries_per_s", {})
    for dialect, rate in dialects.items():
        rows.append((f"dialect {dialect}: drain deliveries/s", _n(rate)))
    sign = result.get("signing", {}).get("sign", {})
    per_delivery = _croupier_us_per_delivery(result)
    for dialect in ("standard", "ed25519", "hmac-hex", "bearer"):
        if dialect in sign:
            us = sign[dialect]["one_secret_us"]
            share = (
                f" ({us / per_delivery:.1%} of croupier's CPU per delivery)" if per_delivery else ""
            )
            rows.append((f"sign {dialect}: CPU us per signature", f"{us:,.1f}{share}"))
    width = max((len(k) for k, _ in rows), default=40)
    print("\n" + "=" * (width + 32))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 32))
    for v in result["verdicts"]:
        print(f"{v['verdict']:<5} {v['check']}: {v['value']}")
    print("=" * (width + 32), flush=True)


def _dialect_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """``BENCH_DIALECT=ed25519`` runs the throughput phase with that signing dialect."""
    dialect = env.get("BENCH_DIALECT")
    return {"dialect": dialect} if dialect else {}


def _croupier_us_per_delivery(result: dict[str, Any]) -> float | None:
    """croupier's CPU (all its processes) per delivery in the throughput phase, in us."""
    tp = result.get("throughput", {})
    cpu = tp.get("cpu", {}).get("croupier", {}).get("cpu_s")
    count = tp.get("deliveries_received")
    return 1e6 * cpu / count if cpu and count else None


def _n(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _write_result(result: dict[str, Any], started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"delivery-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for package in ("croupier", "aiohttp", "uvloop", "sqlalchemy", "fastapi"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


# -- small helpers ---------------------------------------------------------------------------


async def _source() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (read-only git)."""
    out: dict[str, Any] = {}
    for key, argv in (
        ("commit", ["git", "rev-parse", "HEAD"]),
        ("changed_files", ["git", "status", "--porcelain", "--", "src"]),
    ):
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            text = (await proc.communicate())[0].decode().strip()
            out[key] = text if key == "commit" else len(text.splitlines())
    return out


def _rank(n: int, pct: float) -> int:
    """Index of the nearest-rank ``pct`` percentile in a sorted list of ``n``."""
    return min(n - 1, max(0, math.ceil(pct / 100 * n) - 1))


def _distribution(values: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p95, p99 and max of a sorted sequence (zeros when empty)."""
    n = len(values)
    if not n:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "count": n,
        "mean": sum(values) / n,
        "p50": values[_rank(n, 50)],
        "p95": values[_rank(n, 95)],
        "p99": values[_rank(n, 99)],
        "max": values[-1],
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
