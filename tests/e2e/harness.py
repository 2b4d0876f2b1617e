"""End-to-end harness: ``croupier`` as a real subprocess, and real receivers on 127.0.0.1.

Everything here waits with a bound and never blocks the event loop, because the receivers
the subprocess delivers to run on the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from aiohttp import web

ADMIN_KEY = "ck_e2e_admin_key_0123456789abcdefghijklmnop"
#: PostgreSQL needs CROUPIER_SECRET_KEY; SQLite runs keep theirs beside the file.
SECRET_KEY = "Cq6c0sY0mH8b8m1Jx0K9qf3m6n1Yk0cQ2b4d6f8h0j2="
EVENT_TYPE = "PLAYER_OPTED_IN"
_CLI = (sys.executable, "-m", "croupier.cli")


def opted_in(**extra: Any) -> dict[str, Any]:
    """``data`` for a shipped event type; its schema allows extra properties."""
    return {"player_id": "p1", "campaign_id": "c1", "event_type": EVENT_TYPE, **extra}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (yet): for a server, or a closed door."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(
    condition: Callable[[], bool], *, within_s: float, what: str, every_s: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


def sender_children(pid: int) -> list[int]:
    """The sender child processes of process ``pid`` (Linux: read from /proc)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: the fields start after the last ")".
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"croupier.dispatch.child" in cmdline:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is still running; a zombie has exited, whoever is left to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- croupier as a subprocess ----------------------------------------------------------------


class Serve:
    """One ``croupier serve`` process; its stdout and stderr go to a file."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, key: str = ADMIN_KEY) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0
        )

    async def wait_ready(self, *, within_s: float = 30.0) -> None:
        """Until ``GET /health`` answers 200; fail early (with the log) if the process exits."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"croupier serve exited with {self.proc.returncode} before it was "
                        f"ready:\n{self.output()}"
                    )
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"croupier serve not ready within {within_s} s:\n{self.output()}"
                    )
                await asyncio.sleep(0.05)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, *, within_s: float) -> int:
        """The exit code; fails the test if the process is still running after ``within_s``."""
        deadline = time.monotonic() + within_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"croupier serve still running {within_s} s later:\n{self.output()}"
                )
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        """``kill -9``: no handler runs, nothing is flushed or released."""
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, *, within_s: float = 30.0) -> int:
        """SIGTERM, and the exit code once the process has gone."""
        self.terminate()
        return await self.wait_exit(within_s=within_s)


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """Both streams with whitespace collapsed: the console may wrap long lines."""
        return " ".join(f"{self.stdout} {self.stderr}".split())


class Launcher:
    """Starts ``croupier`` commands against one database; kills whatever is left at the end."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self._serves: list[Serve] = []
        self._count = itertools.count(1)

    def env(self, **settings: object) -> dict[str, str]:
        """The parent's environment without its ``CROUPIER_*``, plus these settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
        env["PYTHONUNBUFFERED"] = "1"
        values: dict[str, object] = {
            "database_url": self.database_url,
            "admin_key": ADMIN_KEY,
            "secret_key": None if self.database_url.startswith("sqlite") else SECRET_KEY,
            "allow_loopback": True,
            "retry_jitter": 0,
            # Several serve processes run over a test run: none may take the default 50051.
            "grpc_port": 0,
            **settings,
        }
        for name, value in values.items():
            if value is None:
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"CROUPIER_{name.upper()}"] = text
        return env

    def start(self, *, port: int | None = None, **settings: object) -> Serve:
        """Start ``croupier serve`` without waiting for it to be ready."""
        port = port or free_port()
        log = self.workdir / f"serve-{next(self._count)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [*_CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=self.env(**settings),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        serve = Serve(proc, port, log)
        self._serves.append(serve)
        return serve

    async def serve(self, *, port: int | None = None, **settings: object) -> Serve:
        """Start ``croupier serve`` and wait until it answers ``/health``."""
        serve = self.start(port=port, **settings)
        await serve.wait_ready()
        return serve

    async def run(self, *args: str, within_s: float = 60.0, **settings: object) -> Completed:
        """Run another ``croupier`` command to completion."""
        proc = await asyncio.create_subprocess_exec(
            *_CLI,
            *args,
            env=self.env(**settings),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), within_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"croupier {' '.join(args)} ran over {within_s} s") from None
        assert proc.returncode is not None
        return Completed(
            proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def kill_all(self) -> None:
        for serve in self._serves:
            if serve.proc.poll() is None:
                serve.proc.kill()
            serve.proc.wait(timeout=10)


# -- the REST API ----------------------------------------------------------------------------


async def create_endpoint(api: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    created = await api.post(
        "/v1/endpoints", json={"url": url, "event_types": [EVENT_TYPE], **fields}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def publish(
    api: httpx.AsyncClient,
    event_id: str,
    data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": event_id, "type": EVENT_TYPE, "data": dict(data or opted_in())}
    if occurred_at is not None:
        body["occurred_at"] = occurred_at
    published = await api.post("/v1/events", json=body, headers=dict(headers or {}))
    assert published.status_code == 202, published.text
    answer: dict[str, Any] = published.json()
    return answer


async def publish_many(serve: Serve, count: int, *, concurrency: int = 32) -> list[str]:
    """Publish ``count`` events through ``POST /v1/events``, ``concurrency`` at a time, and
    return the ids croupier gave them.

    aiohttp rather than httpx: thousands of requests from the test process must be cheap.
    """
    numbers = iter(range(count))
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in numbers:
            body = orjson.dumps({"type": EVENT_TYPE, "data": opted_in(seq=n)})
            async with session.post(f"{serve.url}/v1/events", data=body) as resp:
                text = await resp.text()
                assert resp.status == 202, f"publishing #{n}: {resp.status} {text}"
                ids.append(orjson.loads(text)["id"])

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ids


async def deliveries(api: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    """Every delivery matching ``filters``, following the cursor to the end."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "limit": "500"}
        if cursor is not None:
            params["cursor"] = cursor
        page = await api.get("/v1/deliveries", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        out.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


async def statuses(api: httpx.AsyncClient) -> Counter[str]:
    """How many deliveries are in each status."""
    return Counter(d["status"] for d in await deliveries(api))


async def wait_statuses(
    api: httpx.AsyncClient, expected: Mapping[str, int], *, within_s: float
) -> None:
    """Until the API counts exactly ``expected`` deliveries per status."""
    deadline = time.monotonic() + within_s
    while True:
        seen = await statuses(api)
        if seen == Counter(expected):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries by status: wanted {dict(expected)}, saw {seen}")
        await asyncio.sleep(0.2)


# -- receivers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One request as it arrived; ``generation`` is the test's label for the sending process."""

    webhook_id: str
    headers: dict[str, str]
    body: bytes
    at: float
    generation: int

    def envelope(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


#: Decides the status of a reply from the raw body and the (lower-cased) headers.
Responder = Callable[[bytes, dict[str, str]], int]


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers after a delay.

    ``respond`` picks the status (200 by default); ``delay_s`` may be changed while it runs;
    ``on_arrival`` (if set) sees each request before it is answered. The delay is cut short
    by :meth:`stop`, so a hanging receiver never holds up teardown.
    """

    def __init__(self, respond: Responder | None = None, *, delay_s: float = 0.0) -> None:
        self.respond: Responder = respond or (lambda _body, _headers: 200)
        self.delay_s = delay_s
        self.generation = 0
        self.on_arrival: Callable[[Arrival], None] | None = None
        self.arrivals: list[Arrival] = []
        self.answered: list[str] = []
        self.in_flight = 0
        self.port = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self) -> set[str]:
        return {a.webhook_id for a in self.arrivals}

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        arrival = Arrival(webhook_id, headers, body, time.time(), self.generation)
        self.arrivals.append(arrival)
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        self.in_flight += 1
        try:
            if self.delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.delay_s)
            status = self.respond(body, headers)
            self.answered.append(webhook_id)
            return web.Response(status=status, text="ok" if status < 300 else "refused")
        finally:
            self.in_flight -= 1
