"""What the dispatcher and its sender child say to each other over their socketpair.

A frame is a 4-byte big-endian length and then that many bytes of pickle (protocol 5).
Pickle runs code when it loads, so it is only fit for a peer that is trusted: here both ends
are croupier's own processes, on a private socketpair that nothing else holds, so it is.
Messages are plain tuples and lists, which pickle fastest and tie neither end to the other's
classes:

* parent to child: ``(endpoints, jobs)``, the endpoint definitions the child does not have
  yet and then jobs that refer to endpoints by id and version; or :data:`FINISH`, to start
  no more of the jobs it holds (a graceful stop);
* child to parent: a list of reports.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import structlog

from croupier.dispatch.courier import EndpointSpec, Job, Report
from croupier.domain.deliveries import AttemptResult
from croupier.domain.events import Event

log = structlog.get_logger("croupier.dispatch")

_LENGTH = struct.Struct(">I")
#: A frame larger than this is taken for corruption: a batch of jobs stays far below it.
MAX_FRAME_BYTES = 1 << 30

WireEndpoint = tuple[
    str, int, str, dict[str, str], int, str, tuple[str, ...], str, str, int | None, int | None
]
WireEvent = tuple[str, str, str, str, bytes, int, int, str | None, str | None]
WireJob = tuple[int, str, int, str, int, WireEvent]
#: ``(seq,)`` for a job that was never sent, else the attempt's fields and request headers.
WireReport = (
    tuple[int]
    | tuple[int, int, float, int | None, str | None, dict[str, str], str, dict[str, str], str]
)
JobsMessage = tuple[list[WireEndpoint], list[WireJob]]
#: Parent to child: report every job not yet started as unsent, and start no more.
FINISH = "finish"
#: Parent to child, ``(RECALL, [endpoint ids])``: report these endpoints' jobs not yet
#: started as unsent, and start no more of them.
RECALL = "recall"


class FrameError(ValueError):
    """The byte stream does not hold well-formed frames."""


def encode_frame(message: object) -> bytes:
    """One frame carrying ``message``."""
    payload = pickle.dumps(message, protocol=5)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"a frame of {len(payload)} bytes is over the limit")
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream, fed in chunks of any size, back into the messages it carries."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Take the next chunk; return every message it completes, in order."""
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"a frame of {length} bytes is over the limit")
            end = start + _LENGTH.size + length
            if end > len(buffer):
                break
            messages.append(pickle.loads(buffer[start + _LENGTH.size : end]))  # noqa: S301 - see the module docstring
            start = end
        del buffer[:start]
        return messages


class FrameProtocol(asyncio.Protocol):
    """Frames over an asyncio stream transport, in both directions.

    ``on_eof`` runs once, when the peer has closed its end or the connection broke; the
    transport stays open for writing until :meth:`close`, so last words can still go out.
    """

    def __init__(self, on_message: Callable[[Any], None], on_eof: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_eof = on_eof
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._ended = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for message in self._decoder.feed(data):
                self._on_message(message)
        except Exception:
            # Nothing after a frame that could not be read or handled can be trusted: hang up,
            # and the peer's own end-of-stream handling takes over.
            log.exception("dropping the connection after a frame that failed")
            self._end()
            if self._transport is not None:
                self._transport.abort()

    def eof_received(self) -> bool:
        self._end()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, message: object) -> None:
        """Queue one frame; dropped without a word once the connection is gone."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(message))

    def write_eof(self) -> None:
        """Tell the peer nothing more is coming, and keep reading what it still sends."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write_eof()

    def close(self) -> None:
        """Close after what is queued has been written; :attr:`closed` resolves then."""
        if self._transport is not None:
            self._transport.close()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_eof()


def endpoint_to_wire(spec: EndpointSpec) -> WireEndpoint:
    return (
        spec.id,
        spec.version,
        spec.url,
        dict(spec.headers),
        spec.timeout_ms,
        spec.dialect,
        spec.secrets,
        spec.header_prefix,
        spec.format,
        spec.previous_until_ms,
        spec.max_in_flight,
    )


def endpoint_from_wire(raw: WireEndpoint) -> EndpointSpec:
    return EndpointSpec._make(raw)


def job_to_wire(job: Job) -> WireJob:
    return jobs_to_wire([job])[0]


def job_from_wire(raw: WireJob) -> Job:
    return jobs_from_wire([raw])[0]


def jobs_to_wire(jobs: Sequence[Job]) -> list[WireJob]:
    """Jobs that carry the same event object share its wire tuple, which pickle then writes
    once: an event fanned out to many endpoints crosses to the child once per batch."""
    shared: dict[int, WireEvent] = {}
    out: list[WireJob] = []
    for job in jobs:
        e = job.event
        ev = shared.get(id(e))
        if ev is None:
            ev = shared[id(e)] = (
                e.id,
                e.tenant_id,
                e.type,
                e.schema_version,
                e.data_json,
                e.occurred_at_ms,
                e.created_at_ms,
                e.ordering_key,
                e.trace_id,
            )
        out.append(
            (job.seq, job.delivery_id, job.attempt, job.endpoint_id, job.endpoint_version, ev)
        )
    return out


def jobs_from_wire(raw: Sequence[WireJob]) -> list[Job]:
    """The jobs of one message; those that shared an event tuple share one Event."""
    shared: dict[int, Event] = {}
    out: list[Job] = []
    for seq, delivery_id, attempt, endpoint_id, endpoint_version, ev in raw:
        event = shared.get(id(ev))
        if event is None:
            event = shared[id(ev)] = Event(
                id=ev[0],
                tenant_id=ev[1],
                type=ev[2],
                schema_version=ev[3],
                data_json=ev[4],
                occurred_at_ms=ev[5],
                created_at_ms=ev[6],
                ordering_key=ev[7],
                trace_id=ev[8],
            )
        out.append(Job(seq, delivery_id, attempt, endpoint_id, endpoint_version, event))
    return out


def reports_to_wire(reports: Sequence[Report]) -> list[WireReport]:
    out: list[WireReport] = []
    for seq, r, request_headers, attempt_id in reports:
        if r is None:
            out.append((seq,))
        else:
            out.append(
                (
                    seq,
                    r.started_at_ms,
                    r.duration_ms,
                    r.status_code,
                    r.error,
                    _plain(r.response_headers),
                    r.response_body,
                    _plain(request_headers),
                    attempt_id,
                )
            )
    return out


def _plain(headers: Mapping[str, str]) -> dict[str, str]:
    return headers if type(headers) is dict else dict(headers)


def reports_from_wire(raw: Sequence[WireReport]) -> list[Report]:
    out: list[Report] = []
    for item in raw:
        if len(item) == 1:
            out.append(Report(item[0], None, {}))
        else:
            seq, started, duration, status, error, response_headers, body, headers, attempt_id = (
                item
            )
            result = AttemptResult(started, duration, status, error, response_headers, body)
            out.append(Report(seq, result, headers, attempt_id))
    return out
