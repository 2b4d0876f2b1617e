"""Where the store's coroutines run.

Every statement through the async drivers is several round trips between the database
driver and the event loop that awaits it (aiosqlite: a cursor, the statement, the fetch, the
close, each a hop to its thread and back). On the event loop that also serves the API and
hundreds of webhook requests, each hop waits behind a whole busy loop iteration, so a short
transaction took tens of milliseconds under load, and every writer queued behind it.

:class:`StoreThread` gives the store an event loop of its own, in its own thread: the
driver's hops are answered at once there, and the caller's loop sees one hop per store call.
:class:`Inline` runs them where they are called (tests of the store, one-shot commands).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Runner(Protocol):
    async def call(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    def close(self) -> None: ...


class Inline:
    """Run the store's coroutines on the caller's loop."""

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await fn(*args, **kwargs)

    def close(self) -> None:
        return None


class StoreThread:
    """Run the store's coroutines on a loop in a thread of their own."""

    def __init__(self) -> None:
        try:
            import uvloop

            self._loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="croupier-store", daemon=True
        )
        self._thread.start()

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def run() -> T:
            return await fn(*args, **kwargs)

        # Cancelling the caller cancels the work in the store's loop too.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
