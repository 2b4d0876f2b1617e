"""Wallet benchmark: authorize+settle pairs per second and their latency, over REST and over
gRPC, on SQLite and on PostgreSQL, against the same two transactions written with the bare
driver (``bench/wallet_bare.py``) in the same run.

``make bench`` runs it after the delivery benchmark (``.venv/bin/python bench/wallet.py``).
For each store it starts a fresh ``croupier serve`` (SQLite: a file in a temporary
directory; PostgreSQL: a temporary database on 127.0.0.1:5432, migrated with
``croupier migrate`` and dropped at the end), opens players with money and a game session
each through the REST API, and then measures, in this order:

1. bare: the bare driver's pairs/s on its own database of the same schema (``croupier
   migrate`` made it), in a process of its own; measured again after (3), and the mean of
   the two is the baseline;
2. REST throughput: a fixed number of pairs as fast as croupier answers, C concurrent
   clients, each on its own players (so that no pair waits for another on a player's
   lock); an aiohttp session with kept-alive connections, JSON bodies, a fresh
   ``X-Idempotency-Key`` per call;
3. gRPC throughput: the same over one grpc.aio channel (``wallet.v1.Wallet``);
4. latency over REST, then gRPC: pairs started on a fixed schedule (open loop: a pair never
   waits for earlier ones), a warm-up that is not counted, then a measured span: p50/p99/max
   of the pair, from its scheduled start to the settle's answer, and of each call;
5. the bare driver at the same rate, for comparison.

The targets: p99 of the pair under 10 ms at a steady 300 pairs/s, over REST and over gRPC on
both stores (a run where croupier answered less than 95% of the offered rate, or a pair
failed, does not pass); and, on each store, croupier's pairs/s at least 40% of the bare
driver's. That ratio is judged on REST, the API every deployment serves; gRPC's is reported
beside it. The bare driver has no HTTP and no client in its process to share the machine
with, so the ratio also shows what the API itself costs.

Everything talks to 127.0.0.1 only. Every loop is bounded in count and in time, each phase
has a time budget and the run a deadline. Child processes get SIGTERM, then SIGKILL, even
on errors; the temporary directory and databases are removed. The figures are printed as a
table and written to ``bench/results/wallet-<timestamp>.json``, also when a phase failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

import wallet_bare as bare
from delivery import (
    HOST,
    RESULTS_DIR,
    Children,
    CpuMeter,
    _free_port,
    _machine,
    _open_log,
    _own_cpu_seconds,
    _passed_through_env,
    _profiled,
    _run,
    _say,
    _source,
    _tail,
    wait_healthy,
)
from delivery import Options as DeliveryOptions

SELF = Path(__file__).resolve()
BARE = SELF.parent / "wallet_bare.py"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

TARGET_P99_MS = 10.0
TARGET_RATIO = 0.40
#: The protocol whose pairs/s the throughput target is judged on; the other is reported.
RATIO_PROTOCOL = "rest"
PROTOCOLS = ("rest", "grpc")
#: A latency run counts only if croupier answered at least this share of the offered rate.
RATE_TOLERANCE = 0.95

#: The whole run ends by then; each phase also has a budget (seconds). A phase that does
#: not fit in what is left is skipped, one that overruns is cut off and reported so.
RUN_DEADLINE_S = 420.0
BUDGET_S = {"setup": 60.0, "bare": 60.0, "throughput": 75.0, "latency": 60.0}
#: A throughput run stops issuing pairs after this long, done or not.
THROUGHPUT_MAX_S = 45.0
WARMUP_PAIRS_PER_CLIENT = bare.WARMUP_PAIRS_PER_CLIENT
SETUP_CONCURRENCY = 16
CALL_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 2.0
#: An open-loop run gives up on pairs still open this long after the last start.
SETTLE_S = 20.0
#: How often the PostgreSQL CPU meter looks up the backends of a database.
PG_POLL_S = 0.2
ADMIN_KEY = "bench_" + secrets.token_urlsafe(24)


# -- entry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    stores: tuple[str, ...] = ("sqlite", "postgres")
    players: int = 200
    pairs: int = 4000
    clients: int = 32
    rate: int = 300
    seconds: float = 10.0
    warmup_seconds: float = 2.0
    grpc: bool = True
    bare_latency: bool = True
    postgres_url: str = POSTGRES_URL
    profile_dir: Path | None = None
    keep_temp: bool = False
    strict: bool = False


def _parse_options(argv: Sequence[str]) -> Options:
    d = Options()
    p = argparse.ArgumentParser(description="croupier wallet benchmark (see this file's docstring)")
    p.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--players", type=int, default=d.players, help="players, each with a session")
    p.add_argument("--pairs", type=int, default=d.pairs, help="pairs per throughput run")
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent clients")
    p.add_argument("--rate", type=int, default=d.rate, help="latency: pairs started per second")
    p.add_argument("--seconds", type=float, default=d.seconds, help="latency: measured span")
    p.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds)
    p.add_argument("--no-grpc", action="store_true", help="REST only")
    p.add_argument("--no-bare-latency", action="store_true", help="skip the bare driver's latency")
    p.add_argument(
        "--postgres-url",
        default=d.postgres_url,
        help="a PostgreSQL on 127.0.0.1 (trust auth, CREATE DATABASE allowed) to make the "
        "temporary databases on",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample croupier with py-spy in each throughput and latency run (folded stacks)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the SQLite files and logs")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    a = p.parse_args(argv)
    if min(a.players, a.pairs, a.clients, a.rate) < 1 or a.seconds <= 0:
        p.error("--players, --pairs, --clients, --rate and --seconds must be positive")
    if urllib.parse.urlsplit(a.postgres_url).hostname not in ("127.0.0.1", "localhost"):
        p.error("--postgres-url must be on 127.0.0.1: the bench talks to this machine only")
    return Options(
        stores=("sqlite", "postgres") if a.store == "both" else (a.store,),
        players=a.players,
        pairs=a.pairs,
        clients=a.clients,
        rate=a.rate,
        seconds=a.seconds,
        warmup_seconds=a.warmup_seconds,
        grpc=not a.no_grpc,
        bare_latency=not a.no_bare_latency,
        postgres_url=a.postgres_url,
        profile_dir=a.profile,
        keep_temp=a.keep_temp,
        strict=a.strict,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _run(run_driver(_parse_options(sys.argv[1:] if argv is None else argv)))


# -- the driver ----------------------------------------------------------------------------


async def run_driver(opts: Options) -> int:
    """Each store in turn; the table, the JSON; 0 unless ``--strict`` and a target missed."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="croupier-wallet-bench-"))
    children = Children()
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, main_task.cancel)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in opts.__dict__.items()}
    machine = _machine()
    for package in ("grpcio", "asyncpg", "protobuf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            machine["versions"][package] = importlib.metadata.version(package)
    result: dict[str, Any] = {
        "started_at": started.isoformat(),
        "machine": machine,
        "options": options,
        "targets": {
            "p99_ms": TARGET_P99_MS,
            "rate": opts.rate,
            "ratio": TARGET_RATIO,
            "ratio_protocol": RATIO_PROTOCOL,
        },
        "croupier_env": _passed_through_env(),
        "source": await _source(),
        "stores": {},
    }
    _say(
        f"croupier wallet benchmark; stores {', '.join(opts.stores)}; work dir {workdir}; "
        f"deadline {RUN_DEADLINE_S:.0f} s"
    )
    try:
        async with asyncio.timeout(RUN_DEADLINE_S):
            for store in opts.stores:
                out: dict[str, Any] = {}
                result["stores"][store] = out
                try:
                    await run_store(opts, store, children, workdir, out, t0)
                except Exception as exc:
                    # The store could not be set up (no PostgreSQL, say); the next one runs.
                    traceback.print_exc()
                    out["error"] = f"{type(exc).__name__}: {exc}"
                    _say(f"[{store}] failed: {out['error']}")
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
        result["verdicts"] = _verdicts(result, opts)
        _print_table(result)
        _say(f"wrote {_write_result(result, started)}")
    missed = any(v["verdict"] == "FAIL" for v in result["verdicts"])
    return 2 if opts.strict and missed else 0


@dataclass
class StoreRun:
    """What the phases of one store work with."""

    opts: Options
    store: str
    children: Children
    workdir: Path
    dbs: Databases
    server: Server
    sessions: list[str]
    run_t0: float


async def run_store(
    opts: Options,
    store: str,
    children: Children,
    workdir: Path,
    out: dict[str, Any],
    run_t0: float,
) -> None:
    """The phases of one store, each within its budget; ``out`` gets each one's figures."""
    _say(f"[{store}] preparing croupier's database and the bare driver's")
    out["load_average_at_start"] = os.getloadavg()
    async with Databases.made(opts, store, children, workdir) as dbs:
        out["bare_setup"] = await _bare(children, workdir, store, dbs.bare_url, "setup", opts)
        async with Server.running(children, workdir, store, dbs) as server:
            t = time.monotonic()
            sessions = await setup_players(server, opts.players)
            out["setup"] = {"players": len(sessions), "seconds": time.monotonic() - t}
            _say(f"[{store}] {len(sessions)} players with money and a session each")
            run = StoreRun(opts, store, children, workdir, dbs, server, sessions, run_t0)
            protocols = PROTOCOLS if opts.grpc else ("rest",)
            phases: list[tuple[str, float, Callable[[], Awaitable[dict[str, Any]]]]] = [
                ("bare", BUDGET_S["bare"], lambda: phase_bare_throughput(run, "bt1"))
            ]
            for proto in protocols:
                phases.append(
                    (
                        f"{proto}_throughput",
                        BUDGET_S["throughput"],
                        functools.partial(phase_throughput, run, proto),
                    )
                )
            phases.append(
                ("bare_after", BUDGET_S["bare"], lambda: phase_bare_throughput(run, "bt2"))
            )
            for proto in protocols:
                phases.append(
                    (
                        f"{proto}_latency",
                        BUDGET_S["latency"],
                        functools.partial(phase_latency, run, proto),
                    )
                )
            if opts.bare_latency:
                phases.append(
                    ("bare_latency", BUDGET_S["latency"], lambda: phase_bare_latency(run))
                )
            for key, budget, phase in phases:
                left = RUN_DEADLINE_S - (time.monotonic() - run_t0) - 30.0
                if left < min(budget, 30.0):
                    out[key] = {"error": f"skipped: {left:.0f} s left of the run's deadline"}
                    _say(f"[{store} {key}] {out[key]['error']}")
                    continue
                out[key] = await _phase(f"{store} {key}", min(budget, left), phase)
    _ratios(out)


async def _phase(
    label: str, budget_s: float, run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """One phase within its budget; a failure is recorded and the next phase still runs."""
    t0 = time.monotonic()
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
        _say(f"[{label}] failed: {out['error']}")
    return out


def _ratios(out: dict[str, Any]) -> None:
    """The bare baseline (mean of its two runs) and each protocol's ratio to it."""
    rates = [
        out[k]["pairs_per_s"] for k in ("bare", "bare_after") if "pairs_per_s" in out.get(k, {})
    ]
    if not rates:
        return
    base = sum(rates) / len(rates)
    out["bare_pairs_per_s"] = base
    for proto in PROTOCOLS:
        tp = out.get(f"{proto}_throughput", {})
        if "pairs_per_s" in tp:
            tp["ratio_to_bare"] = tp["pairs_per_s"] / base


# -- phases ----------------------------------------------------------------------------------


async def phase_throughput(run: StoreRun, proto: str) -> dict[str, Any]:
    """``pairs`` pairs, ``clients`` at a time, each client on its own players."""
    opts, label = run.opts, f"[{run.store} {proto} throughput]"
    n = len(run.sessions)
    clients = max(1, min(opts.clients, n))
    _say(f"{label} {opts.pairs} pairs, {clients} concurrent clients, {n} players")
    async with _client(run.server, proto, clients) as client:
        prefix = f"{proto[0]}t"

        async def warm(c: int) -> None:
            for k in range(WARMUP_PAIRS_PER_CLIENT):
                seq = c + clients * k
                await _pair(client, bare.Pair.make(f"{prefix}w", seq, n), run.sessions, None)

        await asyncio.gather(*(warm(c) for c in range(clients)))
        tally = bare.Tally()
        issued = 0
        cpu, pg = _meters(run, run.dbs.croupier_db)
        await pg.start()
        t0 = time.perf_counter()
        deadline = t0 + THROUGHPUT_MAX_S

        async def worker(c: int) -> None:
            nonlocal issued
            mine = list(range(c, n, clients))
            k = 0
            while issued < opts.pairs and time.perf_counter() < deadline:
                issued += 1
                seq = mine[k % len(mine)] + n * (k // len(mine))
                k += 1
                await _pair(client, bare.Pair.make(prefix, seq, n), run.sessions, tally)

        async with _profiled(_profile_opts(run), run.server.pid, f"{run.store}-{proto}-tp"):
            progress = _progress(label, lambda: (tally.ok, tally.errors), opts.pairs)
            try:
                await asyncio.gather(*(worker(c) for c in range(clients)))
            finally:
                progress.cancel()
                seconds = time.perf_counter() - t0
                cpu_use = cpu.stop()
                cpu_use["postgres"] = await pg.stop(cpu_use["wall_s"])
    out: dict[str, Any] = {
        "protocol": proto,
        "clients": clients,
        "pairs_requested": opts.pairs,
        "pairs_issued": issued,
        "seconds": seconds,
        "pairs_per_s": tally.ok / seconds if seconds > 0 else 0.0,
        **tally.report(),
        "cpu": cpu_use,
        "cpu_us_per_pair": _per_pair(cpu_use, tally.ok),
    }
    _say(
        f"{label} {tally.ok} pairs in {seconds:.2f} s = {out['pairs_per_s']:,.0f} pairs/s "
        f"({tally.errors} errors); pair p50 {out['pair_ms']['p50']:.1f} ms, "
        f"p99 {out['pair_ms']['p99']:.1f} ms"
    )
    return out


async def phase_latency(run: StoreRun, proto: str) -> dict[str, Any]:
    """Pair ``i`` starts at ``start + i / rate`` whatever happened to the earlier ones.

    The schedule is absolute and never waits for croupier's answers, so a slow answer counts
    its whole wait in the pair's latency (no coordinated omission). The first
    ``warmup_seconds`` of pairs are not counted; pairs still open ``SETTLE_S`` after the last
    start are abandoned and counted.
    """
    opts, label = run.opts, f"[{run.store} {proto} latency]"
    n = len(run.sessions)
    warm = int(opts.rate * opts.warmup_seconds)
    total = warm + int(opts.rate * opts.seconds)
    _say(
        f"{label} {opts.rate} pairs/s: {opts.warmup_seconds:g} s warm-up, then "
        f"{opts.seconds:g} s measured"
    )
    prefix = f"{proto[0]}l"
    async with _client(run.server, proto, 64) as client:
        tally = bare.Tally()
        done, failed, last_end = 0, 0, 0.0
        tasks: set[asyncio.Task[None]] = set()

        async def one(seq: int, scheduled: float) -> None:
            nonlocal done, failed, last_end
            ok = await _pair(
                client,
                bare.Pair.make(prefix, seq, n),
                run.sessions,
                tally if seq >= warm else None,
                scheduled,
            )
            done, failed = done + ok, failed + (not ok)
            last_end = time.perf_counter()

        cpu, pg = _meters(run, run.dbs.croupier_db)
        await pg.start()
        lag = 0.0
        started = 0
        async with _profiled(_profile_opts(run), run.server.pid, f"{run.store}-{proto}-lat"):
            progress = _progress(label, lambda: (done, failed), total)
            origin = time.perf_counter() + 0.05
            try:
                for seq in range(total):
                    scheduled = origin + seq / opts.rate
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        lag = max(lag, -delay)
                    if -delay > 5.0:
                        _say(f"{label} the client fell 5 s behind; stopped at {seq} of {total}")
                        break
                    task = asyncio.create_task(one(seq, scheduled))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    started += 1
                abandoned = await _finish(tasks, label)
            finally:
                progress.cancel()
                cpu_use = cpu.stop()
                cpu_use["postgres"] = await pg.stop(cpu_use["wall_s"])
    measured = total - warm
    out: dict[str, Any] = {
        "protocol": proto,
        "offered_pairs_per_s": opts.rate,
        "warmup_pairs": warm,
        "measured_pairs": measured,
        "pairs_started": started,
        "pairs_done": done,
        # What croupier kept up with: every pair done, over the span from the first
        # scheduled start to the last answer (the offered rate when it keeps up).
        "achieved_pairs_per_s": done / (last_end - origin) if last_end > origin else 0.0,
        "completed_share": tally.ok / measured if measured else 0.0,
        "abandoned": abandoned,
        "max_schedule_lag_ms": lag * 1000,
        **tally.report(),
        "cpu": cpu_use,
        "cpu_us_per_pair": _per_pair(cpu_use, done),
    }
    d = out["pair_ms"]
    _say(
        f"{label} pair from its scheduled start over {d['count']} pairs: p50 {d['p50']:.1f} ms, "
        f"p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms; {tally.errors} errors, "
        f"{abandoned} abandoned; {out['achieved_pairs_per_s']:,.0f} pairs/s achieved"
    )
    return out


async def phase_bare_throughput(run: StoreRun, prefix: str) -> dict[str, Any]:
    label = f"[{run.store} bare throughput]"
    _say(f"{label} {run.opts.pairs} pairs with the bare driver ({_driver(run.store)})")
    out = await _bare(
        run.children, run.workdir, run.store, run.dbs.bare_url, "throughput", run.opts,
        prefix=prefix, pg=_PgMeter.of(run.dbs, run.dbs.bare_db),
    )  # fmt: skip
    _say(
        f"{label} {out['pairs_ok']} pairs in {out['seconds']:.2f} s = "
        f"{out['pairs_per_s']:,.0f} pairs/s ({out['errors']} errors)"
    )
    return out


async def phase_bare_latency(run: StoreRun) -> dict[str, Any]:
    label = f"[{run.store} bare latency]"
    _say(f"{label} {run.opts.rate} pairs/s with the bare driver")
    out = await _bare(
        run.children, run.workdir, run.store, run.dbs.bare_url, "latency", run.opts,
        prefix="bl", pg=_PgMeter.of(run.dbs, run.dbs.bare_db),
    )  # fmt: skip
    d = out["pair_ms"]
    _say(
        f"{label} pair from its scheduled start: p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, "
        f"max {d['max']:.1f} ms ({out['errors']} errors)"
    )
    return out


async def _bare(
    children: Children,
    workdir: Path,
    store: str,
    url: str,
    mode: str,
    opts: Options,
    *,
    prefix: str = "bare",
    pg: _PgMeter | None = None,
) -> dict[str, Any]:
    """Run ``wallet_bare.py MODE`` in its own process; what it printed last, as JSON."""
    argv = [
        *(sys.executable, str(BARE), mode, store, url),
        *("--players", str(opts.players), "--pairs", str(opts.pairs)),
        *("--clients", str(opts.clients), "--max-seconds", str(THROUGHPUT_MAX_S)),
        *("--rate", str(opts.rate), "--seconds", str(opts.seconds)),
        *("--warmup-seconds", str(opts.warmup_seconds), "--prefix", prefix),
    ]
    log_path = workdir / f"bare-{store}-{mode}-{prefix}.log"
    log = _open_log(log_path)
    try:
        proc = await children.spawn(
            f"bare-{mode}", argv, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    finally:
        log.close()
    if pg is not None:
        await pg.start()
    t0 = time.monotonic()
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), THROUGHPUT_MAX_S + 60)
    finally:
        await children.stop(proc)
    wall = time.monotonic() - t0
    lines = raw.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the bare driver exited with {proc.returncode}:\n{_tail(log_path)}")
    out: dict[str, Any] = json.loads(lines[-1])
    if pg is not None:
        out["postgres_cpu"] = await pg.stop(wall)
        pairs = out.get("pairs_done", out.get("pairs_ok"))
        if pairs:
            out["postgres_cpu_us_per_pair"] = 1e6 * out["postgres_cpu"]["cpu_s"] / pairs
    return out


# -- players ---------------------------------------------------------------------------------


async def setup_players(server: Server, players: int) -> list[str]:
    """Players ``bench-p0000`` ... with a deposit and a game session each; the session ids."""
    sessions = [""] * players
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int) -> None:
        player = bare.player_id(i)
        money = {"minor_units": bare.DEPOSIT, "currency": bare.CURRENCY}
        async with sem:
            await server.call("POST", "/v1/players", {"player_id": player, "currency": "EUR"})
            await server.call(
                "POST", f"/v1/players/{player}/adjustments", {"amount": money, "reason": "deposit"}
            )
            got = await server.call(
                "POST", "/v1/sessions", {"player_id": player, "ttl_seconds": 86_400}
            )
            sessions[i] = str(got["session_id"])

    async with asyncio.timeout(BUDGET_S["setup"]):
        await asyncio.gather(*(one(i) for i in range(players)))
    return sessions


# -- the clients -----------------------------------------------------------------------------


class WalletClient(Protocol):
    async def authorize(self, pair: bare.Pair, session_id: str) -> None: ...

    async def settle(self, pair: bare.Pair) -> None: ...


class CallFailed(RuntimeError):
    """A wallet call that croupier refused or failed."""


class RestClient:
    """``POST /v1/bets/authorize`` and ``/v1/bets/settle`` on one kept-alive session."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def _post(self, path: str, key: str, body: dict[str, Any], status: str) -> None:
        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Content-Type": "application/json",
            "X-Idempotency-Key": key,
        }
        async with self.session.post(
            self.base + path, data=orjson.dumps(body), headers=headers
        ) as resp:
            raw = await resp.read()
        if resp.status != 200 or orjson.loads(raw).get("status") != status:
            raise CallFailed(f"POST {path} -> {resp.status}: {raw[:200]!r}")

    async def authorize(self, pair: bare.Pair, session_id: str) -> None:
        body = {
            "session_id": session_id,
            "bet_id": pair.bet_id,
            "round_id": pair.round_id,
            "amount": {"minor_units": bare.STAKE, "currency": bare.CURRENCY},
        }
        await self._post("/v1/bets/authorize", pair.authorize_key, body, "authorized")

    async def settle(self, pair: bare.Pair) -> None:
        body = {
            "bet_id": pair.bet_id,
            "round_id": pair.round_id,
            "win": {"minor_units": pair.win, "currency": bare.CURRENCY},
        }
        await self._post("/v1/bets/settle", pair.settle_key, body, "settled")


class GrpcClient:
    """``wallet.v1.Wallet`` AuthorizeBet and SettleBet on one grpc.aio channel."""

    def __init__(self, channel: Any) -> None:
        from croupier.api.grpc._gen import wallet_pb2 as pb

        self.pb = pb
        self.metadata = (("authorization", f"Bearer {ADMIN_KEY}"),)
        self._authorize = channel.unary_unary(
            "/wallet.v1.Wallet/AuthorizeBet",
            request_serializer=pb.AuthorizeBetReq.SerializeToString,
            response_deserializer=pb.AuthorizeBetRes.FromString,
        )
        self._settle = channel.unary_unary(
            "/wallet.v1.Wallet/SettleBet",
            request_serializer=pb.SettleReq.SerializeToString,
            response_deserializer=pb.SettleRes.FromString,
        )

    async def authorize(self, pair: bare.Pair, session_id: str) -> None:
        pb = self.pb
        req = pb.AuthorizeBetReq(
            session_id=session_id,
            bet_id=pair.bet_id,
            round_id=pair.round_id,
            amount=pb.Money(minor_units=bare.STAKE, currency=bare.CURRENCY),
            idempotency_key=pair.authorize_key,
        )
        res = await self._authorize(req, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        if res.status != "authorized":
            raise CallFailed(f"AuthorizeBet answered {res.status!r}")

    async def settle(self, pair: bare.Pair) -> None:
        pb = self.pb
        req = pb.SettleReq(
            bet_id=pair.bet_id,
            round_id=pair.round_id,
            win=pb.Money(minor_units=pair.win, currency=bare.CURRENCY),
            idempotency_key=pair.settle_key,
        )
        res = await self._settle(req, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        if res.status != "settled":
            raise CallFailed(f"SettleBet answered {res.status!r}")


@contextlib.asynccontextmanager
async def _client(server: Server, proto: str, connections: int) -> AsyncIterator[WalletClient]:
    """A fresh client of ``proto`` for one phase (REST: up to ``connections`` kept-alive
    connections; gRPC: one channel, whose HTTP/2 connection carries every call)."""
    if proto == "rest":
        connector = aiohttp.TCPConnector(limit=max(connections, 64), limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield RestClient(session, server.base)
        return
    import grpc.aio

    async with grpc.aio.insecure_channel(f"{HOST}:{server.grpc_port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        yield GrpcClient(channel)


async def _pair(
    client: WalletClient,
    pair: bare.Pair,
    sessions: Sequence[str],
    tally: bare.Tally | None,
    scheduled: float | None = None,
) -> bool:
    """One authorize then its settle; recorded in ``tally`` unless it is None (warm-up)."""
    start = time.perf_counter()
    try:
        await client.authorize(pair, sessions[pair.seq % len(sessions)])
        mid = time.perf_counter()
        await client.settle(pair)
    except Exception as exc:  # aiohttp's, grpc's, or a refusal: each one is counted
        if tally is not None:
            tally.failed(exc)
        return False
    if tally is not None:
        tally.add(start, mid, time.perf_counter(), scheduled)
    return True


async def _finish(tasks: set[asyncio.Task[None]], label: str) -> int:
    """Wait up to ``SETTLE_S`` for the pairs still open; cancel the rest; how many."""
    if not tasks:
        return 0
    _, late = await asyncio.wait(set(tasks), timeout=SETTLE_S)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
        _say(f"{label} abandoned {len(late)} pairs still open {SETTLE_S:.0f} s after the last")
    return len(late)


def _progress(
    label: str, counts: Callable[[], tuple[int, int]], expected: int
) -> asyncio.Task[None]:
    """Every few seconds: pairs done of ``expected`` (``counts()`` is done, failed)."""

    async def report() -> None:
        previous, t_prev = 0, time.monotonic()
        for _ in range(int(RUN_DEADLINE_S / PROGRESS_EVERY_S)):
            await asyncio.sleep(PROGRESS_EVERY_S)
            now = time.monotonic()
            done, failed = counts()
            rate = (done - previous) / (now - t_prev)
            previous, t_prev = done, now
            _say(f"{label} {done}/{expected} pairs done ({rate:,.0f}/s), {failed} failed")

    return asyncio.create_task(report())


# -- croupier and its databases ----------------------------------------------------------------


@dataclass
class Databases:
    """croupier's database and the bare driver's, both made by ``croupier migrate``."""

    store: str
    croupier_url: str
    bare_url: str
    secret_key: str | None = None
    croupier_db: str | None = None
    bare_db: str | None = None
    admin: Any = field(default=None, repr=False)

    @classmethod
    @contextlib.asynccontextmanager
    async def made(
        cls, opts: Options, store: str, children: Children, workdir: Path
    ) -> AsyncIterator[Databases]:
        if store == "sqlite":
            dbs = cls(
                store,
                croupier_url=f"sqlite:///{workdir / 'croupier.db'}",
                bare_url=str(workdir / "bare.db"),
            )
            await _migrate(children, workdir, dbs.croupier_url, None)
            await _migrate(children, workdir, f"sqlite:///{dbs.bare_url}", None)
            yield dbs
            return
        import asyncpg
        from cryptography.fernet import Fernet

        tag = secrets.token_hex(4)
        names = (f"wallet_bench_{tag}", f"wallet_bench_bare_{tag}")
        base = opts.postgres_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(opts.postgres_url, timeout=10)
        dbs = cls(
            store,
            croupier_url=f"{base}/{names[0]}",
            bare_url=f"{base}/{names[1]}",
            secret_key=Fernet.generate_key().decode(),
            croupier_db=names[0],
            bare_db=names[1],
            admin=admin,
        )
        try:
            for name in names:
                await admin.execute(f'CREATE DATABASE "{name}"')
            await _migrate(children, workdir, dbs.croupier_url, dbs.secret_key)
            await _migrate(children, workdir, dbs.bare_url, dbs.secret_key)
            yield dbs
        finally:
            try:
                for name in names:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


async def _migrate(children: Children, workdir: Path, url: str, secret_key: str | None) -> None:
    env = _croupier_env(url, secret_key)
    log_path = workdir / "migrate.log"
    log = log_path.open("ab")
    try:
        proc = await children.spawn(
            "migrate",
            [sys.executable, "-m", "croupier.cli", "migrate"],
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    finally:
        log.close()
    try:
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        await children.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"croupier migrate exited with {proc.returncode}:\n{_tail(log_path)}")


def _croupier_env(url: str, secret_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    env["CROUPIER_LOG_LEVEL"] = "warning"
    env.update(_passed_through_env())
    env["CROUPIER_DATABASE_URL"] = url
    env["CROUPIER_ADMIN_KEY"] = ADMIN_KEY
    env["CROUPIER_ENVIRONMENT"] = "bench"
    if secret_key is not None:
        env["CROUPIER_SECRET_KEY"] = secret_key
    return env


class Server:
    """One ``croupier serve`` subprocess (REST and gRPC on free ports), and its admin calls."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        session: aiohttp.ClientSession,
        port: int,
        grpc_port: int,
    ) -> None:
        self.proc = proc
        self.session = session
        self.base = f"http://{HOST}:{port}"
        self.grpc_port = grpc_port

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, children: Children, workdir: Path, store: str, dbs: Databases
    ) -> AsyncIterator[Server]:
        port, grpc_port = _free_port(), _free_port()
        while grpc_port == port:
            grpc_port = _free_port()
        env = _croupier_env(dbs.croupier_url, dbs.secret_key)
        env["CROUPIER_GRPC_PORT"] = str(grpc_port)
        argv = [
            *(sys.executable, "-m", "croupier.cli", "serve"),
            *("--host", HOST, "--port", str(port)),
        ]
        log_path = workdir / f"croupier-{store}.log"
        log = _open_log(log_path)
        try:
            proc = await children.spawn(
                f"croupier-{store}", argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env
            )
        finally:
            log.close()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            server = cls(proc, session, port, grpc_port)
            try:
                await server._wait_ready(within_s=60.0)
                _say(f"[{store}] croupier serving REST on :{port}, gRPC on :{grpc_port}")
                yield server
            except BaseException:
                _say(f"croupier log ({log_path.name}), last lines:\n{_tail(log_path)}")
                raise
            finally:
                await children.stop(proc, grace_s=20.0)

    async def _wait_ready(self, *, within_s: float) -> None:
        await wait_healthy(self.proc, self.session, self.base, within_s=within_s)

    async def call(self, method: str, path: str, body: Any) -> Any:
        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Content-Type": "application/json",
            "X-Idempotency-Key": "setup-" + secrets.token_hex(8),
        }
        async with self.session.request(
            method, self.base + path, data=orjson.dumps(body), headers=headers
        ) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
            return orjson.loads(raw) if raw else None


# -- CPU -------------------------------------------------------------------------------------


class _PgMeter:
    """CPU seconds of the PostgreSQL backends serving one database (Linux /proc), from
    :meth:`start` to :meth:`stop`. The backends are looked up every
    :data:`PG_POLL_S`, so one that a pool opens meanwhile counts from its start, and one
    that exits counts up to its last reading. The server's background processes (WAL
    writer, checkpointer) do not count."""

    def __init__(self, admin: Any, dbname: str | None) -> None:
        self.admin = admin
        self.dbname = dbname
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, dbs: Databases, dbname: str | None) -> _PgMeter | None:
        return cls(dbs.admin, dbname) if dbs.admin is not None else None

    async def _read(self, *, first: bool = False) -> None:
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.dbname
        )
        for row in rows:
            pid = int(row["pid"])
            cpu = _own_cpu_seconds(pid)
            if cpu is None:
                continue
            self._first.setdefault(pid, cpu if first else 0.0)
            self._last[pid] = cpu

    async def _poll(self) -> None:
        for _ in range(int(RUN_DEADLINE_S / PG_POLL_S)):
            await asyncio.sleep(PG_POLL_S)
            await self._read()

    async def start(self) -> None:
        self._first, self._last = {}, {}
        await self._read(first=True)
        self._poller = asyncio.create_task(self._poll())

    async def stop(self, wall_s: float) -> dict[str, Any] | None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._read()
        total = sum(self._last[pid] - self._first[pid] for pid in self._last)
        return {
            "cpu_s": total,
            "cores": total / wall_s if wall_s > 0 else 0.0,
            "backends_seen": len(self._last),
        }


class _NoMeter:
    async def start(self) -> None:
        return None

    async def stop(self, wall_s: float) -> dict[str, Any] | None:
        return None


def _meters(run: StoreRun, dbname: str | None) -> tuple[CpuMeter, _PgMeter | _NoMeter]:
    """CPU of croupier (with its sender processes) and of this process, the clients; and on
    PostgreSQL, of the backends serving croupier's database."""
    cpu = CpuMeter({"croupier": run.server.pid, "client": os.getpid()})
    return cpu, _PgMeter.of(run.dbs, dbname) or _NoMeter()


def _per_pair(cpu: dict[str, Any], pairs: int) -> dict[str, float] | None:
    if not pairs:
        return None
    out: dict[str, float] = {
        name: 1e6 * cpu[name]["cpu_s"] / pairs
        for name in ("croupier", "croupier_main", "client")
        if name in cpu
    }
    if cpu.get("postgres"):
        out["postgres"] = 1e6 * cpu["postgres"]["cpu_s"] / pairs
    return out


def _profile_opts(run: StoreRun) -> DeliveryOptions:
    return DeliveryOptions(profile_dir=run.opts.profile_dir)


def _driver(store: str) -> str:
    return "sqlite3, one connection" if store == "sqlite" else "asyncpg, a pool"


# -- report ----------------------------------------------------------------------------------


def _verdicts(result: dict[str, Any], opts: Options) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    rate = opts.rate
    for store, figures in result["stores"].items():
        if "error" in figures:
            out.append(
                {"check": f"{store}: the store's run", "value": figures["error"], "verdict": "FAIL"}
            )
            continue
        for proto in PROTOCOLS if opts.grpc else ("rest",):
            check = (
                f"{store}, {_name(proto)}: p99 of authorize+settle < {TARGET_P99_MS:g} ms "
                f"at {rate} pairs/s"
            )
            lat = figures.get(f"{proto}_latency", {})
            if "pair_ms" not in lat:
                out.append(
                    {"check": check, "value": lat.get("error", "not run"), "verdict": "FAIL"}
                )
                continue
            d = lat["pair_ms"]
            notes = []
            if lat["errors"]:
                notes.append(f"{lat['errors']} pairs failed")
            if lat["abandoned"]:
                notes.append(f"{lat['abandoned']} abandoned")
            if lat["completed_share"] < 1.0 and not notes:
                notes.append(f"{lat['completed_share']:.1%} of the offered pairs completed")
            if lat["achieved_pairs_per_s"] < RATE_TOLERANCE * lat["offered_pairs_per_s"]:
                notes.append(f"croupier kept up with {lat['achieved_pairs_per_s']:,.0f} pairs/s")
            ok = d["p99"] < TARGET_P99_MS and not notes
            value = "; ".join(
                [f"{d['p99']:,.1f} ms (p50 {d['p50']:,.1f}, max {d['max']:,.1f})", *notes]
            )
            out.append({"check": check, "value": value, "verdict": "PASS" if ok else "FAIL"})
        base = figures.get("bare_pairs_per_s")
        for proto in PROTOCOLS if opts.grpc else ("rest",):
            is_target = proto == RATIO_PROTOCOL
            check = f"{store}, {_name(proto)}: pairs/s >= {TARGET_RATIO:.0%} of the bare driver's"
            if not is_target:
                check += " (reported; the target is judged on " + _name(RATIO_PROTOCOL) + ")"
            tp = figures.get(f"{proto}_throughput", {})
            if "ratio_to_bare" not in tp:
                value = tp.get("error", "not run") if base else "no bare baseline"
                out.append(
                    {"check": check, "value": value, "verdict": "FAIL" if is_target else "-"}
                )
                continue
            ratio = tp["ratio_to_bare"]
            notes = [f"{tp['errors']} pairs failed"] if tp["errors"] else []
            ok = ratio >= TARGET_RATIO and not notes
            verdict = ("PASS" if ok else "FAIL") if is_target else ("ok" if ok else "under")
            value = "; ".join(
                [f"{ratio:.1%} ({tp['pairs_per_s']:,.0f} vs {base:,.0f} pairs/s)", *notes]
            )
            out.append({"check": check, "value": value, "verdict": verdict})
    return out


def _name(proto: str) -> str:
    return "REST" if proto == "rest" else "gRPC"


def _print_table(result: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    for store, f in result["stores"].items():
        b1, b2 = f.get("bare", {}), f.get("bare_after", {})
        if "bare_pairs_per_s" in f:
            spread = ""
            if "pairs_per_s" in b1 and "pairs_per_s" in b2:
                spread = f" (before {b1['pairs_per_s']:,.0f}, after {b2['pairs_per_s']:,.0f})"
            rows.append(
                (f"{store}: bare driver pairs/s, mean", f"{f['bare_pairs_per_s']:,.0f}{spread}")
            )
        for proto in PROTOCOLS:
            tp = f.get(f"{proto}_throughput", {})
            if "pairs_per_s" in tp:
                ratio = tp.get("ratio_to_bare")
                share = f"; {ratio:.1%} of bare" if ratio is not None else ""
                rows.append(
                    (
                        f"{store}: {_name(proto)} pairs/s ({tp['clients']} clients)",
                        f"{tp['pairs_per_s']:,.0f}{share}; {tp['errors']} errors",
                    )
                )
                per = tp.get("cpu_us_per_pair") or {}
                rows.append(
                    (
                        f"{store}: {_name(proto)} CPU us per pair",
                        ", ".join(f"{k} {v:,.0f}" for k, v in per.items() if k != "croupier_main"),
                    )
                )
        for proto in (*PROTOCOLS, "bare"):
            lat = f.get(f"{proto}_latency", {})
            if "pair_ms" not in lat:
                continue
            d, a, s = lat["pair_ms"], lat["authorize_ms"], lat["settle_ms"]
            name = _name(proto) if proto != "bare" else "bare driver"
            rows.append(
                (
                    f"{store}: {name} @{lat['offered_pairs_per_s']:g}/s pair p50/p99/max, ms",
                    f"{d['p50']:,.1f} / {d['p99']:,.1f} / {d['max']:,.1f} ({d['count']:,} pairs)",
                )
            )
            rows.append(
                (
                    f"{store}: {name} @{lat['offered_pairs_per_s']:g}/s authorize; settle p50/p99",
                    f"{a['p50']:,.1f} / {a['p99']:,.1f}; {s['p50']:,.1f} / {s['p99']:,.1f}",
                )
            )
        for key in (
            "bare",
            "bare_after",
            "bare_latency",
            *(f"{p}_{k}" for p in PROTOCOLS for k in ("throughput", "latency")),
        ):
            if "error" in f.get(key, {}):
                rows.append((f"{store}: {key}", f"error: {f[key]['error']}"))
    width = max((len(k) for k, _ in rows), default=40)
    print("\n" + "=" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 40))
    for v in result["verdicts"]:
        print(f"{v['verdict']:<5} {v['check']}: {v['value']}")
    print("=" * (width + 40), flush=True)


def _write_result(result: dict[str, Any], started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"wallet-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


if __name__ == "__main__":
    sys.exit(main())
