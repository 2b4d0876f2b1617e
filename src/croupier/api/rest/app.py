"""The FastAPI application: routers, the error mapper and the request context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from croupier import __version__
from croupier.api.rest import errors
from croupier.api.rest.context import RequestContext
from croupier.api.rest.responses import JSONResponse
from croupier.api.rest.routes import (
    deliveries,
    endpoints,
    event_types,
    events,
    health,
    tenants,
    wallet,
)
from croupier.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    """Build the app around a built container; its lifespan starts and stops the dispatcher."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.close()

    app = FastAPI(
        title="croupier",
        version=__version__,
        description="A seamless wallet and signed, retried, ordered webhooks for iGaming.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.container = container
    errors.install(app)
    # Routes are matched in order, one pattern at a time: the hot paths (money, then
    # publishing) first.
    for module in (wallet, events, deliveries, endpoints, event_types, tenants, health):
        app.include_router(module.router)
    app.add_middleware(RequestContext, max_body_bytes=container.settings.max_body_bytes)
    return app
