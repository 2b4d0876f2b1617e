"""The grpc.aio server that serves ``wallet.v1.Wallet`` beside the REST API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc.aio
import structlog

from croupier.api.grpc.wallet import WalletServicer

if TYPE_CHECKING:
    from croupier.bootstrap import Container

log = structlog.get_logger("croupier.api")

#: How long a stop waits for calls in progress before it cancels them. Wallet calls are
#: short, and a write that has begun finishes in its transaction either way.
GRACE_S = 5.0


class GrpcServer:
    """One grpc.aio server on ``host:port`` (0 picks a free port; :attr:`port` tells which)."""

    def __init__(self, container: Container, host: str, port: int) -> None:
        self.container = container
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """``host:port`` as it listens (an IPv6 host in brackets)."""
        return f"{_bracketed(self.host)}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(
            # Without this, a second croupier on the same port would share it silently.
            options=(("grpc.so_reuseport", 0),),
        )
        server.add_generic_rpc_handlers(
            (WalletServicer(self.container.wallet, self.container.tenants).handler(),)
        )
        wanted = f"{_bracketed(self.host)}:{self.requested_port}"
        try:
            port = server.add_insecure_port(wanted)
        except RuntimeError:
            port = 0  # older grpcio answers 0 rather than raising
        if port == 0:
            await server.stop(None)
            raise OSError(f"gRPC cannot listen on {wanted} (is the port taken?)")
        await server.start()
        self.port = port
        self._server = server
        log.debug("grpc listening", address=self.address)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """Refuse new calls, let calls in progress finish for up to ``grace_s``, then stop."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
