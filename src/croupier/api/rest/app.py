"""The FastAPI application: routers, the error mapper and the request context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from croupier import __version__
from croupier.api.grpc.server import GrpcServer
from croupier.api.rest import errors
from croupier.api.rest.context import RequestContext
from croupier.api.rest.hotpath import HotPath
from croupier.api.rest.responses import JSONResponse
from croupier.api.rest.routes import (
    deliveries,
    endpoint_stats,
    endpoints,
    event_types,
    events,
    health,
    tenants,
    wallet,
)
from croupier.bootstrap import Container


def create_app(
    container: Container,
    *,
    serve_grpc: bool = False,
    on_grpc_listening: Callable[[str], None] | None = None,
    hot_path: bool = True,
) -> FastAPI:
    """Build the app around a built container; its lifespan starts and stops the dispatcher,
    and with ``serve_grpc`` the wallet's gRPC server on ``CROUPIER_HOST`` and
    ``CROUPIER_GRPC_PORT``: started once the container is, stopped before it closes.
    ``on_grpc_listening`` is told the address it listens on (``host:port``). ``hot_path``
    serves the wallet's per-round writes around FastAPI's machinery (:mod:`.hotpath`); the
    answers are the same either way."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await container.start()
        grpc_server: GrpcServer | None = None
        try:
            if serve_grpc:
                settings = container.settings
                grpc_server = GrpcServer(container, settings.host, settings.grpc_port)
                await grpc_server.start()
                if on_grpc_listening is not None:
                    on_grpc_listening(grpc_server.address)
            yield
        finally:
            try:
                if grpc_server is not None:
                    await grpc_server.stop()
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
    for module in (
        wallet,
        events,
        deliveries,
        endpoints,
        endpoint_stats,
        event_types,
        tenants,
        health,
    ):
        app.include_router(module.router)
    # Inside the request context (trace id, body limit), around FastAPI's machinery.
    if hot_path:
        app.add_middleware(HotPath, container=container)
    app.add_middleware(RequestContext, max_body_bytes=container.settings.max_body_bytes)
    return app
