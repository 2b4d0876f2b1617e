"""A FastAPI receiver for croupier's webhooks: verifies, drops duplicates, prints each event.

Run it (from the repository root, with croupier installed)::

    CROUPIER_WEBHOOK_SECRET=whsec_... PORT=9000 python examples/fastapi_receiver.py

and create an endpoint with the url ``http://127.0.0.1:9000/webhooks``. Environment:

- ``CROUPIER_WEBHOOK_SECRET`` (required): the endpoint's secret; the ``whpk_`` public key for
  ed25519. During a rotation give the old and the new one, separated by a space.
- ``CROUPIER_WEBHOOK_DIALECT``: standard (default), ed25519, hmac-hex or bearer.
- ``CROUPIER_WEBHOOK_HEADER_PREFIX``: hmac-hex only, the ``{Prefix}`` of
  ``X-{Prefix}-Signature`` (default ``Croupier``).
- ``PORT`` (default 9000) and ``HOST`` (default 127.0.0.1).

Event ids already handled are kept in ``webhooks-seen.db`` in the working directory, so a
duplicate is recognised even after a restart. One line is printed per request:
``accepted <type> <id> attempt=<n> <data>``, ``duplicate <id>`` or
``refused <status> <kind>: <why>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, cast

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response

from croupier.receiver import DIALECTS, Dialect, Event, SQLiteDedupe, Verifier
from croupier.receiver.fastapi import DuplicateDelivery, webhook_dependency


def verifier_from_env() -> Verifier:
    """The endpoint's verifier, from the environment; exits with a message if unusable."""
    secrets = os.environ.get("CROUPIER_WEBHOOK_SECRET", "").split()
    dialect = os.environ.get("CROUPIER_WEBHOOK_DIALECT", "standard")
    if not secrets:
        raise SystemExit("set CROUPIER_WEBHOOK_SECRET to the endpoint's secret")
    if dialect not in DIALECTS:
        raise SystemExit(f"CROUPIER_WEBHOOK_DIALECT must be one of {', '.join(DIALECTS)}")
    try:
        return Verifier(
            cast(Dialect, dialect),
            secrets=secrets,
            header_prefix=os.environ.get("CROUPIER_WEBHOOK_HEADER_PREFIX", "Croupier"),
        )
    except ValueError as exc:  # the message names the problem, never the key
        raise SystemExit(f"CROUPIER_WEBHOOK_SECRET: {exc}") from None


seen = SQLiteDedupe("webhooks-seen.db")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the dedupe file when the server stops."""
    yield
    seen.close()


app = FastAPI(lifespan=lifespan)
verified_event = webhook_dependency(verifier_from_env(), seen)


@app.post("/webhooks")
async def webhooks(event: Annotated[Event, Depends(verified_event)]) -> dict[str, bool]:
    """Runs once per event: store or enqueue it here, and answer fast."""
    data = json.dumps(event.data, ensure_ascii=False)
    print(f"accepted {event.type} {event.id} attempt={event.attempt} {data}", flush=True)
    return {"ok": True}


@app.exception_handler(DuplicateDelivery)
async def on_duplicate(request: Request, exc: DuplicateDelivery) -> Response:
    """A repeat of a handled event: acknowledge it (a 2xx, or croupier retries) and say so."""
    print(f"duplicate {exc.event.id}", flush=True)
    return JSONResponse({"duplicate": True, "id": exc.event.id})


@app.exception_handler(HTTPException)
async def on_refusal(request: Request, exc: HTTPException) -> Response:
    """Print why a request was refused, then answer as FastAPI would."""
    if isinstance(exc.detail, dict) and "error" in exc.detail:
        print(
            f"refused {exc.status_code} {exc.detail['error']}: {exc.detail['message']}", flush=True
        )
    return await http_exception_handler(request, exc)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "9000")),
    )
