"""One HTTP POST of a webhook, over kept-alive HTTP/1.1 connections.

The connections are asyncio protocols (uvloop in the sender processes) and responses are
parsed by httptools, the C parser that uvicorn's server uses. This module keeps only what a
webhook sender needs on top of them: the request head, a pool of kept-alive connections per
origin under one cap, one deadline per attempt, and the reading of a response into an
:class:`AttemptResult`. A general-purpose client does much more per request (a request and
a response object, multidicts, a writer task, cookie and redirect handling); timed alone on
the delivery bench's receiver, that cost four times the CPU per POST of this path
(``bench/http_client.py``, ``docs/benchmarks.md``), and the senders' CPU is what bounds
croupier's delivery rate.

What the sender guarantees (``tests/integration/test_http_sender.py``):

* ``post`` never raises for the network or the receiver: every failure is an
  ``AttemptResult`` whose ``error`` says what happened, in a fixed wording per kind
  (``ERRORS``), so operators can search for it.
* Redirects are not followed; a 3xx is the answer. ``1xx`` interim answers are skipped.
* The response body is kept up to ``RESPONSE_BODY_LIMIT`` bytes; the rest is read and
  dropped so the connection can serve the next request, up to ``DRAIN_LIMIT``.
* A kept-alive connection that the receiver closed while it was idle is dropped from the
  pool as soon as the close arrives. One that dies as a request is written on it, before a
  single byte of an answer, is replaced and the request sent once more on a new connection:
  the receiver may have seen the first copy (deliveries are at least once, and receivers
  drop duplicates by ``webhook-id``), but no attempt fails for a connection it closed.
* With an ``address_policy``, a new connection goes only to a resolved address the policy
  allows, checked as it is connected to, and to that very address (the URL's host is only
  the TLS server name), so a name that re-resolves elsewhere (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from croupier.domain.deliveries import RESPONSE_BODY_LIMIT, AttemptResult
from croupier.domain.network import AddressPolicy

#: How much of a response body is read and dropped after ``RESPONSE_BODY_LIMIT`` so that
#: the connection can be kept; a longer body closes it instead.
DRAIN_LIMIT: Final = 1 << 20
#: The most bytes of response headers accepted; more is an invalid response.
HEADERS_LIMIT: Final = 64 << 10
#: How long a resolved address list is reused.
DNS_TTL_S: Final = 60.0
#: Parsed URLs and resolved names kept at most; past it the cache starts over.
CACHE_LIMIT: Final = 10_000

ERRORS: Final = {
    "url": "invalid url",
    "header": "invalid header",
    "connect": "connection failed",
    "timeout": "timeout",
    "closed": "connection closed by the receiver before a response",
    "broken": "response body broken off",
    "response": "invalid response",
}


class HttpSender:
    """Posts bodies and reports what came back; never raises for a network failure.

    ``max_connections`` caps the connections open at once, idle ones included; at the cap a
    new origin closes the longest-idle connection of another, or waits for one to finish.
    ``ssl_context`` verifies ``https`` receivers (default: the system's trust store).
    Connections idle for ``idle_timeout_s`` (or less, if the receiver says so in a
    ``Keep-Alive: timeout=N`` header) are closed. ``address_policy`` says which addresses
    may be connected to; None allows every one.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = 15.0,
        address_policy: AddressPolicy | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._idle_timeout_s = idle_timeout_s
        self._address_policy = address_policy
        self._open = False
        self._targets: dict[str, _Target | str] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        # Idle connections per origin, the most recently used last.
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._reserved = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._next_sweep = 0.0

    async def open(self) -> None:
        if not self._open:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
                self._ssl_context.set_alpn_protocols(["http/1.1"])
            self._open = True

    async def close(self) -> None:
        """Closes every connection; posts still in flight end as failed attempts."""
        self._open = False
        for connection in list(self._connections):
            connection.abort("cancelled: the sender closed")
        self._connections.clear()
        self._idle.clear()
        self._reserved = 0
        # Give the transports one turn of the loop to close their sockets.
        await asyncio.sleep(0)

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout_ms: int,
        started_at_ms: int,
    ) -> AttemptResult:
        """POST once (and once more only on a kept-alive connection found dead)."""
        if not self._open:
            raise RuntimeError("HttpSender.open() must be called first")
        t0 = time.perf_counter()
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= CACHE_LIMIT:
                self._targets.clear()  # URLs edited over a long life: start over
            target = self._targets[url] = _target(url)
        if isinstance(target, str):
            return _failed(started_at_ms, t0, target)
        head = target.head(body, headers)
        if head is None:
            return _failed(started_at_ms, t0, f"{ERRORS['header']}: CR or LF in a request header")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        connection = self._take_idle(target.origin, loop.time())
        try:
            if connection is None:
                connection = await self._connect(target, deadline)
            error = await connection.exchange(head, body, deadline)
            if error == _RETRY:
                self._discard(connection)
                connection = await self._connect(target, deadline)
                error = await connection.exchange(head, body, deadline)
        except TimeoutError:
            error = f"{ERRORS['timeout']}: no complete response within {timeout_ms} ms"
        except _ConnectError as exc:
            error = f"{ERRORS['connect']}: {exc}"
        except BaseException:
            # Cancelled (a shutdown cut the attempt off): the connection is mid-request.
            if connection is not None:
                connection.abort("cancelled")
                self._discard(connection)
            raise
        if error is not None:
            if connection is not None:
                connection.abort(error)
                self._discard(connection)
            if error == _RETRY:
                error = ERRORS["closed"]
            elif error == _TIMED_OUT:
                error = f"{ERRORS['timeout']}: no complete response within {timeout_ms} ms"
            return _failed(started_at_ms, t0, error)
        assert connection is not None  # set on every path without an error
        result = AttemptResult(
            started_at_ms=started_at_ms,
            duration_ms=_ms_since(t0),
            status_code=connection.status,
            response_headers=connection.response_headers(),
            response_body=bytes(connection.body).decode("utf-8", errors="replace"),
        )
        self._release(connection, loop.time())
        return result

    # -- the pool ---------------------------------------------------------------------------

    def _take_idle(self, origin: tuple[str, str, int], now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.abort("idle")
            self._discard(connection)
        return None

    def _release(self, connection: _Connection, now: float) -> None:
        if not (self._open and connection.keep_alive):
            connection.abort("done")
            self._discard(connection)
            return
        if self._waiters:
            # Someone waits for room: an idle connection would keep it waiting.
            connection.abort("room")
            self._discard(connection)
            return
        connection.idle_since = now
        self._idle.setdefault(connection.origin, []).append(connection)
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + max(1.0, self._idle_timeout_s / 2)
        for origin, idle in list(self._idle.items()):
            for connection in [c for c in idle if not c.reusable(now)]:
                idle.remove(connection)
                connection.abort("idle")
                self._discard(connection)
            if not idle:
                del self._idle[origin]

    def _discard(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
            idle = self._idle.get(connection.origin)
            if idle and connection in idle:
                idle.remove(connection)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _reserve(self) -> None:
        """Room for one more connection: wait for it, or close the longest-idle one."""
        while len(self._connections) + self._reserved >= self._max_connections:
            oldest = min(
                (idle[0] for idle in self._idle.values() if idle),
                key=lambda c: c.idle_since,
                default=None,
            )
            if oldest is not None:
                oldest.abort("room")
                self._discard(oldest)
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the room on
                raise
        self._reserved += 1

    async def _connect(self, target: _Target, deadline: float) -> _Connection:
        async with asyncio.timeout_at(deadline):
            await self._reserve()
            try:
                connection = await self._open_connection(target)
            except BaseException:
                self._reserved -= 1
                self._wake()
                raise
            self._reserved -= 1
        self._connections.add(connection)
        connection.on_lost = self._discard
        return connection

    async def _open_connection(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl_context if target.scheme == "https" else None
        policy = self._address_policy
        reason = "no address"
        refusal: str | None = None
        tried = False
        for host, port in await self._resolve(target.host, target.port):
            # Checked here rather than when resolving: cached addresses are checked too, and
            # what is checked is exactly what is connected to.
            if policy is not None and (refused := policy.refusal(host)) is not None:
                refusal = refusal or refused
                continue
            tried = True
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(target.origin, self._idle_timeout_s),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
                return connection
            except (OSError, ssl.SSLError) as exc:
                shown = f"[{host}]" if ":" in host else host
                reason = f"{_describe(exc)} ({shown}:{port})"
        if refusal is not None and not tried:
            raise _ConnectError(f"address not allowed: {refusal}")
        raise _ConnectError(reason)

    async def _resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        now = time.monotonic()
        cached = self._addresses.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except socket.gaierror as exc:
            raise _ConnectError(f"{host}: {exc.strerror}") from exc
        addresses = list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in infos))
        if not addresses:
            raise _ConnectError(f"{host}: no address")
        if len(self._addresses) >= CACHE_LIMIT:
            self._addresses.clear()
        self._addresses[(host, port)] = (now + DNS_TTL_S, addresses)
        return addresses


# -- one connection -------------------------------------------------------------------------

_RETRY: Final = "\0retry"
_TIMED_OUT: Final = "\0timeout"


class _ConnectError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self, origin: tuple[str, str, int], idle_timeout_s: float) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self.keep_alive = True
        self.status = 0
        self.body = bytearray()
        self.on_lost: Callable[[_Connection], None] | None = None
        self._idle_timeout_s = idle_timeout_s
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[str | None] | None = None
        self._closed = False
        self._served = 0
        self._answered = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_seen = 0
        self._framed = False
        self._headers_done = False

    # The pool's side.

    def reusable(self, now: float) -> bool:
        return not self._closed and now - self.idle_since < self._idle_timeout_s

    async def exchange(self, head: bytes, body: bytes, deadline: float) -> str | None:
        """Writes one request and waits for its response: None, or what went wrong."""
        if self._closed or self._transport is None:
            return _RETRY if self._served else ERRORS["closed"]
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str | None] = loop.create_future()
        self._waiter = waiter
        self.status = 0
        self.body = bytearray()
        self._headers = []
        self._header_bytes = self._body_seen = 0
        self._answered = self._framed = self._headers_done = False
        timer = loop.call_at(deadline, self._finish, _TIMED_OUT)
        try:
            self._transport.write(head + body)
            return await waiter
        finally:
            timer.cancel()

    def response_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("utf-8", errors="replace")
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def abort(self, error: str) -> None:
        """Closes at once; a request still waiting ends with ``error``."""
        self._finish(error)
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.abort()

    # asyncio's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for (a 408 before an idle close, say): not reusable.
            self.keep_alive = False
            self.abort("unsolicited")
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(f"{ERRORS['response']}: the receiver switched protocols")
        except httptools.HttpParserError as exc:
            if self._waiter is not None:
                reason = str(exc.__context__ or exc) or type(exc).__name__
                self._finish(f"{ERRORS['response']}: {reason}")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.keep_alive = False
        if self._waiter is not None:
            if self._headers_done and not self._framed:
                self._finish(None)  # a body that ends with the connection
            elif self._headers_done:
                self._finish(f"{ERRORS['broken']}: the connection closed mid-body")
            elif self._served and not self._answered:
                self._finish(_RETRY)
            else:
                self._finish(ERRORS["closed"])
        if self.on_lost is not None:
            self.on_lost(self)

    # httptools' side.

    def on_message_begin(self) -> None:
        if self._waiter is None:
            self.keep_alive = False  # a second answer to one request

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > HEADERS_LIMIT:
            self.keep_alive = False
            self._finish(f"{ERRORS['response']}: headers over {HEADERS_LIMIT // 1024} KiB")
            raise _Stop
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True
        elif lowered == b"keep-alive":
            self._limit_idle(value)

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = self.status >= 200
        if self.status in (204, 304):
            self._framed = True

    def on_body(self, chunk: bytes) -> None:
        room = RESPONSE_BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += chunk[:room]
        self._body_seen += len(chunk)
        if self._body_seen > DRAIN_LIMIT:
            self.keep_alive = False
            self._finish(None)
            raise _Stop

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An interim 1xx answer: the real one follows.
            self._headers = []
            self._header_bytes = 0
            self._framed = False
            return
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        self._served += 1
        self._finish(None)

    def _finish(self, error: str | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(error)

    def _limit_idle(self, value: bytes) -> None:
        for part in value.split(b","):
            key, _, number = part.strip().partition(b"=")
            if key.lower() == b"timeout" and number.strip().isdigit():
                # Leave a second's margin before the receiver's own close.
                self._idle_timeout_s = min(self._idle_timeout_s, int(number) - 1.0)


class _Stop(Exception):
    """Raised from a parser callback to stop reading a response that is already decided."""


# -- the request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    #: ``POST <path> HTTP/1.1`` and ``Host``, ready to be followed by the other headers.
    prefix: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def head(self, body: bytes, headers: Mapping[str, str]) -> bytes | None:
        """The request head, or None if a header would split it (CR or LF in it)."""
        lines = [self.prefix, f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        text = "\r\n".join(lines)
        # Exactly the line breaks put in here (the prefix holds one): any other CR or LF
        # came from a header and would let it write headers of its own.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            return None
        return (text + "\r\n\r\n").encode("utf-8")


def _target(url: str) -> _Target | str:
    """The parsed URL, or why it cannot be posted to."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        return f"{ERRORS['url']}: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{ERRORS['url']}: the scheme must be http or https"
    if not host:
        return f"{ERRORS['url']}: no host"
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return f"{ERRORS['url']}: the host is not a valid name"
    default = 443 if parts.scheme == "https" else 80
    port = port or default
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    authority = shown if port == default else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if any(c in path for c in " \r\n\t"):
        return f"{ERRORS['url']}: whitespace in the path"
    return _Target(
        parts.scheme,
        ascii_host,
        port,
        f"POST {path} HTTP/1.1\r\nHost: {authority}",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _failed(started_at_ms: int, t0: float, error: str) -> AttemptResult:
    return AttemptResult(started_at_ms=started_at_ms, duration_ms=_ms_since(t0), error=error)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
