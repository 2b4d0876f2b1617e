"""Misbehaving webhook receivers on 127.0.0.1, one aiohttp server each, on an ephemeral port.

A :class:`ChaosReceiver` records every request as it arrives (after its headers, before any
answer) and hands it to a :class:`Behaviour`: answer, fail at random, hang, rate-limit,
say the endpoint is gone, trickle the body, hang up, or pause. Every wait is cut short by
:meth:`ChaosReceiver.stop`, so a receiver that hangs never holds up a test's teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Arrival:
    """One request as it arrived; ``generation`` labels the process that sent it."""

    webhook_id: str
    headers: dict[str, str]
    #: Empty when the behaviour hangs up before reading it.
    body: bytes
    #: ``time.monotonic()`` when its headers were read.
    at: float
    generation: int

    def envelope(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


class Behaviour(ABC):
    """How a receiver answers one request that has been recorded."""

    #: Whether the body is read (and recorded) before :meth:`respond` runs.
    reads_body: ClassVar[bool] = True

    @abstractmethod
    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        """The answer; it may also wait, stream, or cut the connection."""


@dataclass
class Answer(Behaviour):
    """``status`` after ``delay_s``."""

    status: int = 200
    delay_s: float = 0.0

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        if self.delay_s > 0:
            await receiver.wait(self.delay_s)
        return web.Response(status=self.status, text="ok" if self.status < 300 else "no")


@dataclass
class Flaky(Behaviour):
    """500 for a ``failure_rate`` share of requests, 200 for the rest, drawn from a seeded
    rng: the same seed and the same order of arrivals give the same answers."""

    seed: int
    failure_rate: float = 0.5
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        failed = self.rng.random() < self.failure_rate
        return web.Response(status=500 if failed else 200, text="flaky" if failed else "ok")


@dataclass
class Hang(Behaviour):
    """Never answers (until ``most_s`` or the receiver stops): every request outlives any
    sensible endpoint timeout."""

    most_s: float = 60.0

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        await receiver.wait(self.most_s)
        return web.Response(status=200, text="too late")


@dataclass
class RateLimited(Behaviour):
    """429 with ``Retry-After: retry_after_s`` to the first ``refusals`` requests of each
    webhook id (None: to every one), 200 after that."""

    retry_after_s: int
    refusals: int | None = None

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        # This request is already counted among the arrivals.
        seen = receiver.count(arrival.webhook_id)
        if self.refusals is None or seen <= self.refusals:
            return web.Response(
                status=429, text="slow down", headers={"Retry-After": str(self.retry_after_s)}
            )
        return web.Response(status=200, text="ok")


class Gone(Behaviour):
    """410: the receiver says the endpoint no longer exists."""

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        return web.Response(status=410, text="gone")


@dataclass
class Trickle(Behaviour):
    """200 with a ``size``-byte body sent ``bytes_per_s`` at a time, in small pieces: the
    status and headers come at once, the body takes ``size / bytes_per_s`` seconds."""

    size: int = 8192
    bytes_per_s: int = 1024
    piece: int = 128

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = self.size
        response.content_type = "text/plain"
        await response.prepare(request)
        sent = 0
        # The sender gives up and closes the connection: the next write fails, and that
        # ends the trickle.
        with contextlib.suppress(ConnectionError):
            while sent < self.size and not receiver.closing:
                await response.write(b"x" * self.piece)
                sent += self.piece
                await receiver.wait(self.piece / self.bytes_per_s)
        return response


class HangUp(Behaviour):
    """Closes the connection once the request's headers are read: no body read, no answer."""

    reads_body = False

    async def respond(
        self, request: web.Request, arrival: Arrival, receiver: ChaosReceiver
    ) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        transport.abort()
        # Nothing can be written any more; aiohttp drops this answer quietly.
        return web.Response(status=200)


class ChaosReceiver:
    """One aiohttp server on 127.0.0.1 whose every request gets ``behaviour``.

    ``behaviour`` and ``generation`` may be changed while it runs; ``on_arrival`` (if set)
    sees each request after it is recorded and before it is answered. While :meth:`hold`
    is in force, requests are recorded and then kept waiting until :meth:`release`.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.generation = 0
        self.on_arrival: Callable[[Arrival], None] | None = None
        self.arrivals: list[Arrival] = []
        self.in_flight = 0
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._closing = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()
        self._runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, behaviour: Behaviour) -> ChaosReceiver:
        self = cls(behaviour)
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    def hold(self) -> None:
        """Keep each request waiting, once recorded, until :meth:`release`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def stop(self) -> None:
        self._closing.set()
        self._open.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the receiver stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, webhook_id: str) -> int:
        """How many requests carried ``webhook_id``."""
        return self._counts[webhook_id]

    def copies(self) -> Counter[str]:
        """Requests per webhook id."""
        return Counter(self._counts)

    def ids(self) -> set[str]:
        return set(self._counts)

    def first_arrival(self) -> dict[str, float]:
        """When each webhook id first arrived (``time.monotonic()``)."""
        first: dict[str, float] = {}
        for arrival in self.arrivals:
            first.setdefault(arrival.webhook_id, arrival.at)
        return first

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        behaviour = self.behaviour
        body = await request.read() if behaviour.reads_body else b""
        headers = {k.lower(): v for k, v in request.headers.items()}
        arrival = Arrival(headers.get("webhook-id", ""), headers, body, at, self.generation)
        self.arrivals.append(arrival)
        self._counts[arrival.webhook_id] += 1
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        self.in_flight += 1
        try:
            await self._open.wait()
            return await behaviour.respond(request, arrival, self)
        finally:
            self.in_flight -= 1
