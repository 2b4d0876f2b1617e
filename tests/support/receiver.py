"""A real webhook receiver on 127.0.0.1 for tests: records every request, answers on script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Receiver:
    """``await Receiver.start()``; ``receiver.url(path)``; ``receiver.requests``.

    ``script(path, n)`` (n = how many requests that path had before this one) decides each
    reply; by default every request gets 200.
    """

    def __init__(self, script: Callable[[str, int], Reply] | None = None) -> None:
        self.script = script or (lambda _path, _n: Reply())
        self.requests: list[Received] = []
        self._counts: dict[str, int] = {}
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: Requests being answered now, and the most there ever were at once.
        self.active = 0
        self.max_concurrent = 0

    @classmethod
    async def start(cls, script: Callable[[str, int], Reply] | None = None) -> Receiver:
        self = cls(script)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(
        self, count: int, *, path: str | None = None, within_s: float = 10.0
    ) -> None:
        """Until ``count`` requests arrived (at ``path``, or in all); fails on timeout."""

        def enough() -> bool:
            got = self.requests if path is None else self.at(path)
            return len(got) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(enough), within_s)

    async def _handle(self, request: web.Request) -> web.Response:
        self.active += 1
        self.max_concurrent = max(self.max_concurrent, self.active)
        try:
            return await self._answer(request)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = self._counts.get(request.path, 0)
        self._counts[request.path] = n + 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        # Recorded before the script runs, so a script may look at ``requests[-1]``.
        self.requests.append(Received(request.path, headers, body, time.time()))
        reply = self.script(request.path, n)
        async with self._arrived:
            self._arrived.notify_all()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
