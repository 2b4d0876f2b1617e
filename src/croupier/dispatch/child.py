"""The sender child process: ``python -m croupier.dispatch.child --fd N ...``.

Started by :class:`~croupier.dispatch.transport.ProcessTransport`, never by hand. It reads
jobs from its end of a socketpair (file descriptor ``N``), sends them with a courier on
uvloop and the system clock, and writes the reports back. It lives exactly as long as the
parent's end of the socket: at end-of-stream, whether the parent closed it or died, it cuts
off what is still in flight, reports what finished, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from croupier.dispatch.courier import Report
    from croupier.dispatch.wire import FrameProtocol


def main(argv: Sequence[str] | None = None) -> int:
    # First, before the slow imports: Ctrl-C reaches the whole process group, and a process
    # manager's SIGTERM may too. Either way the parent drains first and then ends this process
    # by closing the socket; a child that left early would cut the drain short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = _parser().parse_args(argv)

    import structlog

    from croupier.logs import configure_logging

    configure_logging(args.log_level)
    structlog.contextvars.bind_contextvars(process="sender")
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="croupier.dispatch.child")
    parser.add_argument("--fd", type=int, required=True, help="this end of the socketpair")
    parser.add_argument("--max-in-flight", type=int, required=True)
    parser.add_argument("--endpoint-max-in-flight", type=int, required=True)
    parser.add_argument("--environment", required=True)
    parser.add_argument("--allow-networks", default="", help="CIDRs the SSRF guard lets through")
    parser.add_argument("--allow-loopback", action="store_true")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--time-scale", type=float, default=1.0, help="tests and drills")
    parser.add_argument("--time-origin", default=None, help="the scaled clock's origin: MS:WALL_NS")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from croupier.dispatch.courier import Courier, CourierConfig
    from croupier.dispatch.sender import HttpSender
    from croupier.dispatch.wire import (
        FINISH,
        RECALL,
        FrameProtocol,
        endpoint_from_wire,
        jobs_from_wire,
        reports_to_wire,
    )
    from croupier.domain.clock import Clock, ScaledClock, SystemClock
    from croupier.domain.network import AddressPolicy
    from croupier.runtime import settle_heap

    policy = AddressPolicy.parse(args.allow_networks, allow_loopback=args.allow_loopback)
    sender = HttpSender(max_connections=args.max_in_flight, address_policy=policy)
    await sender.open()
    ended = asyncio.Event()
    protocol: FrameProtocol

    def on_reports(reports: list[Report]) -> None:
        protocol.send(reports_to_wire(reports))

    clock: Clock = SystemClock()
    if args.time_scale != 1 and args.time_origin:
        start_ms, wall_ns = (int(part) for part in args.time_origin.split(":"))
        clock = ScaledClock(args.time_scale, start_ms=start_ms, wall_origin_ns=wall_ns)
    courier = Courier(
        sender,
        clock=clock,
        config=CourierConfig(
            max_in_flight=args.max_in_flight,
            endpoint_max_in_flight=args.endpoint_max_in_flight,
            environment=args.environment,
            address_policy=policy,
        ),
        on_reports=on_reports,
    )

    def on_message(message: Any) -> None:
        if message == FINISH:
            courier.finish()
            return
        if message[0] == RECALL:
            courier.recall(message[1])
            return
        endpoints, jobs = message
        courier.learn(endpoint_from_wire(e) for e in endpoints)
        courier.submit(jobs_from_wire(jobs))

    settle_heap()
    protocol = FrameProtocol(on_message, ended.set)
    sock = socket.socket(fileno=args.fd)
    await asyncio.get_running_loop().create_unix_connection(lambda: protocol, sock=sock)
    await ended.wait()
    await courier.cancel()
    protocol.close()
    # Bounded: a dead parent reads nothing, and the last reports are only for a live one.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(protocol.closed, 5.0)
    await sender.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
