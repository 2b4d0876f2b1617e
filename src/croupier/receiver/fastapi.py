"""FastAPI helper: a dependency that verifies the request and drops duplicates.

::

    from fastapi import Depends, FastAPI
    from croupier.receiver import Event, SQLiteDedupe, Verifier
    from croupier.receiver.fastapi import webhook_dependency

    verified_event = webhook_dependency(Verifier("standard", SECRET), SQLiteDedupe("seen.db"))

    @app.post("/webhooks")
    async def webhooks(event: Event = Depends(verified_event)) -> dict[str, bool]:
        ...

A refused request is answered 400 (401 for bearer) before the route runs. A duplicate is
answered 200 before the route runs, by raising :class:`DuplicateDelivery`. If the route
raises, the event id is released so croupier's retry is handled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from croupier.receiver._http import (
    DUPLICATE_STATUS,
    duplicate_body,
    failure_body,
    failure_headers,
)
from croupier.receiver.dedupe import Dedupe
from croupier.receiver.errors import VerificationError
from croupier.receiver.event import Event
from croupier.receiver.verify import Verifier

__all__ = ["DuplicateDelivery", "webhook_dependency"]


class DuplicateDelivery(HTTPException):
    """An already-claimed event arrived again; FastAPI answers it ``200``.

    The dependency raises it so the route never runs for a duplicate. It is an
    ``HTTPException`` with status 200, so FastAPI's default handler answers
    ``{"detail": {"duplicate": true, "id": "<event id>"}}`` with no set-up; register an
    exception handler for this class to answer differently (keep it a 2xx, or croupier
    will retry).
    """

    def __init__(self, event: Event) -> None:
        super().__init__(status_code=DUPLICATE_STATUS, detail=duplicate_body(event))
        #: The duplicate event, verified.
        self.event = event


def webhook_dependency(
    verifier: Verifier, dedupe: Dedupe | None = None
) -> Callable[[Request], AsyncIterator[Event]]:
    """A FastAPI dependency yielding the verified :class:`Event` of the request.

    - verification fails: ``HTTPException`` with ``verifier.failure_status`` (400, or 401
      for bearer) and detail ``{"error": <kind>, "message": <why>}``;
    - with ``dedupe``, an id already claimed: :class:`DuplicateDelivery` (answered 200);
    - the route raises (``HTTPException`` included): the id is released, so the retry
      croupier sends is handled. A route that *returns* an error response instead of
      raising keeps the claim, and the retry is then acknowledged as a duplicate: raise.

    Dedupe calls run in a worker thread, so SQLite or Redis never block the event loop.
    """

    async def verified_event(request: Request) -> AsyncIterator[Event]:
        # The raw bytes, never a parsed-and-reserialised body: the signature covers bytes.
        body = await request.body()
        try:
            event = verifier.verify(request.headers, body)
        except VerificationError as exc:
            raise HTTPException(
                status_code=verifier.failure_status,
                detail=failure_body(exc),
                headers=failure_headers(verifier) or None,
            ) from None
        if dedupe is None:
            yield event
            return
        if not await run_in_threadpool(dedupe.claim, event.id):
            raise DuplicateDelivery(event)
        try:
            yield event
        except BaseException:
            await run_in_threadpool(dedupe.release, event.id)
            raise

    return verified_event
