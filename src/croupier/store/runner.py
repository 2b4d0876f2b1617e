"""An event loop in a thread of its own, for the PostgreSQL driver.

Each statement through asyncpg is a round trip between the driver and the event loop that
awaits it. On the loop that also serves the API and the dispatcher, each of those waits
behind a whole busy loop iteration, so a short transaction took tens of milliseconds under
load. On a loop of its own the driver is answered at once, and the caller's loop sees one
hop per transaction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StoreThread:
    """Run coroutines on a loop in a thread of their own."""

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
