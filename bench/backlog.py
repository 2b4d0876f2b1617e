"""Backlog benchmark: croupier's memory while it works through a million due deliveries.

The issue it answers: a backlog of one million due deliveries must run in bounded RSS,
because claims are batched from the store and never all loaded. ``make bench`` does not run
it (writing the backlog alone takes a minute or two); run it by hand:

    .venv/bin/python bench/backlog.py                  # 1,000,000 deliveries, 90 s
    .venv/bin/python bench/backlog.py --deliveries 200000 --seconds 30

1. ``croupier migrate`` makes a SQLite file in a temporary directory; a first ``croupier
   serve`` with its dispatcher off creates a permissive event type and ``--endpoints``
   endpoints (through the API, so their secrets are sealed as usual), then stops;
2. the backlog is written straight into the file with ``sqlite3``: one event and one
   pending delivery due now per ``--deliveries``, spread over the endpoints;
3. ``croupier serve`` starts on it with its dispatcher on, sending to a receiver in this
   process on 127.0.0.1; for ``--seconds`` the resident memory (VmRSS) of the serve
   process and of each of its sender children is read every 0.5 s, with the deliveries
   received so far.

It prints RSS at start, peak and end, per process and in all, the deliveries made and
their rate, and writes ``bench/results/backlog-<UTC timestamp>.json``. Bounded memory shows
as a peak that stays near the start however large ``--deliveries`` is. Everything talks to
127.0.0.1 only; every loop is bounded in count and time; children are stopped (SIGTERM,
then SIGKILL) and the temporary directory removed, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

HOST = "127.0.0.1"
EVENT_TYPE = "bench.backlog"
RESULTS = Path(__file__).parent / "results"
ADMIN_KEY = "bench_" + secrets.token_urlsafe(24)
INSERT_CHUNK = 20_000


def main() -> int:
    p = argparse.ArgumentParser(description="croupier under a backlog of due deliveries")
    p.add_argument("--deliveries", type=int, default=1_000_000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--seconds", type=float, default=90.0, help="how long to watch it work")
    p.add_argument("--keep-temp", action="store_true")
    a = p.parse_args()
    if a.deliveries < 1 or a.endpoints < 1 or a.seconds <= 0:
        p.error("--deliveries, --endpoints and --seconds must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="croupier-backlog-"))
    try:
        env = _migrated(workdir)
        result = asyncio.run(run(workdir, env, a.deliveries, a.endpoints, a.seconds))
    finally:
        if not a.keep_temp:
            shutil.rmtree(workdir, ignore_errors=True)
    _report(result)
    return 0


async def run(
    workdir: Path, env: dict[str, str], deliveries: int, endpoints: int, seconds: float
) -> dict[str, Any]:
    db = workdir / "croupier.db"
    received = Counter()
    async with _receiver(received) as receiver_port, aiohttp.ClientSession() as session:
        urls = [f"http://{HOST}:{receiver_port}/ep{i}" for i in range(endpoints)]
        async with _serve(workdir, env | {"CROUPIER_DISPATCHER_ENABLED": "false"}) as base:
            await _prepare(session, base, urls)
        _say(f"writing a backlog of {deliveries:,} due deliveries")
        started = time.monotonic()
        _write_backlog(db, deliveries)
        written_s = time.monotonic() - started
        _say(f"backlog written in {written_s:.1f} s; {db.stat().st_size / 2**20:,.0f} MiB")
        samples: list[dict[str, Any]] = []
        async with _serve(workdir, env) as base:
            serve_pid = _pid_of(base)
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                rss = {pid: _rss_mib(pid) for pid in [serve_pid, *_descendants(serve_pid)]}
                samples.append({"t": round(elapsed, 2), "rss_mib": rss, "received": received.n})
                if len(samples) % 20 == 0:
                    _say(
                        f"{elapsed:5.0f} s: {received.n:,} delivered, RSS "
                        f"{sum(v for v in rss.values() if v):,.0f} MiB"
                    )
                if received.n >= deliveries:
                    break
                await asyncio.sleep(0.5)
    totals = [sum(v for v in s["rss_mib"].values() if v) for s in samples]
    serve = [s["rss_mib"].get(serve_pid) or 0 for s in samples]
    span = samples[-1]["t"] if samples else 0.0
    return {
        "deliveries": deliveries,
        "endpoints": endpoints,
        "backlog_write_s": written_s,
        "watched_s": span,
        "delivered": received.n,
        "deliveries_per_s": received.n / span if span else 0.0,
        "rss_total_mib": {"start": totals[0], "peak": max(totals), "end": totals[-1]},
        "rss_serve_mib": {"start": serve[0], "peak": max(serve), "end": serve[-1]},
        "samples": samples,
        "when": datetime.now(UTC).isoformat(),
        "commit": _commit(),
    }


def _migrated(workdir: Path) -> dict[str, str]:
    """A migrated SQLite file in ``workdir``; the environment that points croupier at it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")},
        "CROUPIER_DATABASE_URL": f"sqlite:///{workdir / 'croupier.db'}",
        "CROUPIER_ADMIN_KEY": ADMIN_KEY,
        "CROUPIER_LOG_LEVEL": "warning",
        "CROUPIER_GRPC_PORT": "0",
    }
    subprocess.run(
        [sys.executable, "-m", "croupier.cli", "migrate"],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    return env


class Counter:
    def __init__(self) -> None:
        self.n = 0


@contextlib.asynccontextmanager
async def _receiver(received: Counter) -> AsyncIterator[int]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received.n += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


_SERVING: dict[str, asyncio.subprocess.Process] = {}


@contextlib.asynccontextmanager
async def _serve(workdir: Path, env: dict[str, str]) -> AsyncIterator[str]:
    port = _free_port()
    base = f"http://{HOST}:{port}"
    log = (workdir / f"serve-{port}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "croupier.cli", "serve", "--dev"),
        *("--host", HOST, "--port", str(port)),
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    _SERVING[base] = proc
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if proc.returncode is not None:
                    raise RuntimeError(f"croupier serve exited with {proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(base + "/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("croupier serve did not become healthy in 60 s")
        yield base
    finally:
        _SERVING.pop(base, None)
        log.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _pid_of(base: str) -> int:
    return _SERVING[base].pid


async def _prepare(session: aiohttp.ClientSession, base: str, urls: list[str]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def call(method: str, path: str, body: Any) -> None:
        async with session.request(method, base + path, json=body, headers=headers) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")

    await call("PUT", f"/v1/event-types/{EVENT_TYPE}", {"schema": {"type": "object"}})
    for url in urls:
        await call("POST", "/v1/endpoints", {"url": url, "event_types": [EVENT_TYPE]})


def _write_backlog(db: Path, deliveries: int) -> None:
    """One event and one due delivery per ``deliveries``, in chunks, straight into the file
    (croupier is not running)."""
    conn = sqlite3.connect(db)
    try:
        (tenant_id,) = conn.execute("SELECT tenant_id FROM endpoints LIMIT 1").fetchone()
        endpoint_ids = [r[0] for r in conn.execute("SELECT id FROM endpoints ORDER BY id")]
        now = int(time.time() * 1000)
        (seq0,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        for start in range(0, deliveries, INSERT_CHUNK):
            n = min(INSERT_CHUNK, deliveries - start)
            conn.executemany(
                "INSERT INTO events (seq, id, tenant_id, type, schema_version, data, "
                "occurred_at, created_at, fingerprint, delivery_count) "
                "VALUES (?, ?, ?, ?, '1.0.0', ?, ?, ?, '', 1)",
                (
                    (seq0 + i + 1, f"evt_b{i}", tenant_id, EVENT_TYPE, f'{{"n":{i}}}', now, now)
                    for i in range(start, start + n)
                ),
            )
            conn.executemany(
                "INSERT INTO deliveries (id, tenant_id, event_seq, event_id, endpoint_id, "
                "event_type, status, attempts, cycle_start, due_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, 0, ?, ?, ?)",
                (
                    (
                        f"dlv_b{i}",
                        tenant_id,
                        seq0 + i + 1,
                        f"evt_b{i}",
                        endpoint_ids[i % len(endpoint_ids)],
                        EVENT_TYPE,
                        now,
                        now,
                        now,
                    )
                    for i in range(start, start + n)
                ),
            )
            conn.commit()
    finally:
        conn.close()


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(c) for c in children]
    for c in list(out):
        out += _descendants(c)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    return ""


def _report(result: dict[str, Any]) -> None:
    total, serve = result["rss_total_mib"], result["rss_serve_mib"]
    print("=" * 78)
    print(f"backlog                         {result['deliveries']:,} due deliveries")
    print(f"written straight to the store   {result['backlog_write_s']:.1f} s")
    print(
        f"delivered while watched         {result['delivered']:,} in "
        f"{result['watched_s']:.0f} s ({result['deliveries_per_s']:,.0f}/s)"
    )
    print(
        f"RSS, serve + senders, MiB       start {total['start']:,.0f}, "
        f"peak {total['peak']:,.0f}, end {total['end']:,.0f}"
    )
    print(
        f"RSS, serve process, MiB         start {serve['start']:,.0f}, "
        f"peak {serve['peak']:,.0f}, end {serve['end']:,.0f}"
    )
    print("=" * 78)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"backlog-{stamp}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")


def _say(message: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
