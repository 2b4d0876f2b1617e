"""``HttpSender`` against raw scripted servers on 127.0.0.1, one edge case of HTTP/1.1 each.

Every server here is a bare ``asyncio.start_server``: it parses the request itself and writes
exactly the bytes a test scripts, so keep-alive, broken connections, odd framings and
timeouts can be reproduced byte for byte.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from croupier.dispatch.sender import HttpSender
from croupier.domain.deliveries import RESPONSE_BODY_LIMIT, AttemptResult
from croupier.domain.network import AddressPolicy

#: What a responder returns: go on reading requests on this connection, or hang up.
KEEP_OPEN = True
HANG_UP = False

TIMEOUT_MS = 2_000
STARTED_AT_MS = 1_700_000_000_123
CLOSED_BEFORE_RESPONSE = "connection closed by the receiver before a response"


# --------------------------------------------------------------------------- scripted server


@dataclass(frozen=True)
class Request:
    """One request as it arrived on the wire."""

    number: int  # position among all the requests the server received
    connection: int  # which accepted connection it came on (0, 1, ...)
    index_on_connection: int  # 0 for the first request of its connection
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        assert len(found) <= 1, f"{name} sent {len(found)} times: {found}"
        return found[0] if found else None


@dataclass
class Exchange:
    """What a responder gets: the request and the connection's two ends."""

    request: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Abort the connection with a TCP RST instead of a clean FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Responder = Callable[[Exchange], Awaitable[bool]]


class ScriptedServer:
    """A raw HTTP/1.1 server whose every answer is written by ``respond``.

    ``respond`` is None for a server that accepts TCP connections and never says a word.
    """

    def __init__(self, respond: Responder | None, ssl_context: ssl.SSLContext | None) -> None:
        self._respond = respond
        self._ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self.port = 0
        self.connections = 0  # accepted so far
        self.open_connections = 0
        self.max_open_connections = 0
        self.closed_by_client = 0  # connections on which the client sent EOF
        self.bytes_received = 0
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self._ssl_context
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/hook", *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def targets(self) -> list[str]:
        return [r.target for r in self.requests]

    async def until(self, predicate: Callable[[], bool], within_s: float = 2.0) -> bool:
        """Wait until ``predicate()`` holds (checked on every change); False on timeout."""

        async def watch() -> None:
            while not predicate():
                await self._changed.wait()

        try:
            await asyncio.wait_for(watch(), within_s)
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), 5)
        if self.errors:
            raise self.errors[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = self.connections
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        self._notify()
        try:
            if self._respond is None:
                while chunk := await reader.read(65536):
                    self.bytes_received += len(chunk)
                self.closed_by_client += 1
                return
            index = 0
            while True:
                request = await self._read_request(reader, connection, index)
                if request is None:
                    return
                self.requests.append(request)
                self._notify()
                if not await self._respond(Exchange(request, reader, writer)):
                    return
                index += 1
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away mid-exchange: that is what some tests do
        except asyncio.CancelledError:
            # Only ``close()`` cancels a handler. Ending normally matters: on Python 3.11,
            # a connection handler that ends cancelled makes asyncio log an error.
            pass
        except Exception as exc:  # a broken test script: reported when the server closes
            self.errors.append(exc)
        finally:
            self.open_connections -= 1
            if reader.at_eof():
                writer.transport.abort()  # the client is gone: no goodbye (nor TLS close_notify)
            else:
                writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
                writer.transport.abort()
            self._notify()
            self._tasks.discard(task)

    async def _read_request(
        self, reader: asyncio.StreamReader, connection: int, index: int
    ) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.bytes_received += len(exc.partial)
            self.closed_by_client += 1
            return None
        self.bytes_received += len(head)
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        )
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await reader.readexactly(length)
        self.bytes_received += len(body)
        return Request(
            number=len(self.requests),
            connection=connection,
            index_on_connection=index,
            method=method,
            target=target,
            version=version,
            headers=headers,
            body=body,
        )


def http_response(
    status: int = 200,
    body: bytes = b"ok",
    *,
    reason: str = "OK",
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """The bytes of a whole response; ``Content-Length`` is added unless told not to."""
    lines = [f"{version} {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def answer_ok(exchange: Exchange) -> bool:
    await exchange.send(http_response())
    return KEEP_OPEN


async def hang_up(exchange: Exchange) -> bool:
    """Read the request, then close the connection without a byte of response."""
    return HANG_UP


async def reset(exchange: Exchange) -> bool:
    """Read the request, then reset the connection without a byte of response."""
    exchange.reset()
    return HANG_UP


class Servers:
    """``await serve(respond)``: a started scripted server, closed after the test."""

    def __init__(self) -> None:
        self._started: list[ScriptedServer] = []

    async def __call__(
        self, respond: Responder | None, *, ssl_context: ssl.SSLContext | None = None
    ) -> ScriptedServer:
        server = ScriptedServer(respond, ssl_context)
        self._started.append(server)
        await server.start()
        return server

    async def close(self) -> None:
        for server in self._started:
            await server.close()


class Senders:
    """``await senders(**options)``: an opened ``HttpSender``, closed after the test."""

    def __init__(self) -> None:
        self._opened: list[HttpSender] = []

    async def __call__(self, **options: Any) -> HttpSender:
        options.setdefault("max_connections", 8)
        sender = HttpSender(**options)
        await sender.open()
        self._opened.append(sender)
        return sender

    async def close(self) -> None:
        for sender in self._opened:
            await sender.close()


@pytest.fixture
async def serve() -> AsyncIterator[Servers]:
    servers = Servers()
    yield servers
    await servers.close()


@pytest.fixture
async def senders(serve: Servers) -> AsyncIterator[Senders]:
    # Depends on ``serve`` so that senders close before the servers they talk to.
    made = Senders()
    yield made
    await made.close()


@pytest.fixture
async def sender(senders: Senders) -> HttpSender:
    return await senders(max_connections=8)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


async def post(
    sender: HttpSender,
    url: str,
    body: bytes = b'{"hello":"world"}',
    headers: dict[str, str] | None = None,
    *,
    timeout_ms: int = TIMEOUT_MS,
) -> AttemptResult:
    """One post, bounded on the test's side too so that a hanging sender fails the test."""
    return await asyncio.wait_for(
        sender.post(
            url,
            body,
            {"Content-Type": "application/json"} if headers is None else headers,
            timeout_ms=timeout_ms,
            started_at_ms=STARTED_AT_MS,
        ),
        timeout_ms / 1000 + 3,
    )


def assert_ok(result: AttemptResult, status: int = 200) -> None:
    assert result.error is None, result.error
    assert result.status_code == status


def assert_failed(result: AttemptResult, prefix: str) -> None:
    assert result.status_code is None, result
    assert result.error is not None
    assert result.error.startswith(prefix), result.error


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------------------- the request


async def test_the_request_on_the_wire_is_exactly_the_post_that_was_asked_for(
    serve: Servers, sender: HttpSender
) -> None:
    server = await serve(answer_ok)
    body = b'{"name":"caf\xc3\xa9"}\r\n\x00\xff binary tail'
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg_2f1a",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,abc+/=",
        "X-Mixed-Case": "Value With  Two  Spaces; q=1",
    }

    result = await post(sender, server.url("/hooks/in?tenant=a%20b&x=1#fragment"), body, headers)

    assert_ok(result)
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request.method == "POST"
    assert request.target == "/hooks/in?tenant=a%20b&x=1"
    assert request.version == "HTTP/1.1"
    assert request.header("Host") == f"127.0.0.1:{server.port}"
    assert request.header("Content-Length") == str(len(body))
    assert request.header("Transfer-Encoding") is None
    assert request.header("Accept-Encoding") is None
    for name, value in headers.items():
        assert request.values(name) == [value], name
    assert request.body == body


async def test_a_url_without_a_path_posts_to_the_root(serve: Servers, sender: HttpSender) -> None:
    server = await serve(answer_ok)

    result = await post(sender, f"http://127.0.0.1:{server.port}")

    assert_ok(result)
    assert server.targets() == ["/"]


async def test_an_empty_body_is_sent_with_a_zero_content_length(
    serve: Servers, sender: HttpSender
) -> None:
    server = await serve(answer_ok)

    result = await post(sender, server.url(), b"")

    assert_ok(result)
    assert server.requests[0].header("Content-Length") == "0"
    assert server.requests[0].body == b""


async def test_a_header_value_with_a_line_break_is_refused_and_nothing_is_sent(
    serve: Servers, sender: HttpSender
) -> None:
    server = await serve(answer_ok)

    result = await post(sender, server.url(), headers={"X-Test": "a\r\nX-Evil: 1"})

    assert_failed(result, "invalid header")
    assert server.requests == []
    assert server.bytes_received == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Test", "a\nX-Evil: 1"),
        ("X-Test", "a\rX-Evil: 1"),
        ("X-Test\r\nX-Evil", "1"),
        ("X-Test\n", "1"),
    ],
    ids=["lf-in-value", "cr-in-value", "crlf-in-name", "lf-in-name"],
)
async def test_any_cr_or_lf_in_a_header_name_or_value_is_refused_and_the_sender_stays_usable(
    serve: Servers, sender: HttpSender, name: str, value: str
) -> None:
    server = await serve(answer_ok)

    refused = await post(sender, server.url(), headers={name: value})
    accepted = await post(sender, server.url(), headers={"X-Test": "fine"})

    assert_failed(refused, "invalid header")
    assert_ok(accepted)
    assert len(server.requests) == 1
    assert server.requests[0].values("X-Test") == ["fine"]
    assert server.requests[0].values("X-Evil") == []


# --------------------------------------------------------------------------- the response


async def test_the_result_carries_status_lower_cased_headers_body_and_timing(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(
            http_response(
                200,
                "accepted: caf\u00e9".encode(),
                headers=[
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("X-Thing", "a"),
                    ("Set-Cookie", "s=1"),
                    ("x-thing", "b"),
                    ("Retry-After", "5"),
                ],
            )
        )
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_ok(result)
    assert result.started_at_ms == STARTED_AT_MS
    assert isinstance(result.duration_ms, float)
    assert 0 <= result.duration_ms < TIMEOUT_MS
    assert result.response_body == "accepted: caf\u00e9"
    assert result.response_headers["x-thing"] == "a, b"
    assert result.response_headers["content-type"] == "text/plain; charset=utf-8"
    assert result.response_headers["retry-after"] == "5"
    assert result.response_headers["set-cookie"] == "s=1"
    assert result.response_headers["content-length"] == str(len("accepted: caf\u00e9".encode()))
    assert all(name == name.lower() for name in result.response_headers)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (201, "Created"),
        (204, "No Content"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (410, "Gone"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ],
)
async def test_any_final_status_is_a_result_not_an_error(
    serve: Servers, sender: HttpSender, status: int, reason: str
) -> None:
    body = b"" if status == 204 else f"status {status}".encode()

    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(status, body, reason=reason))
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_ok(result, status)
    assert result.response_body == body.decode()


async def test_a_body_that_is_not_utf8_is_decoded_with_replacement_characters(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(200, b"ok \xff\xfe end"))
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_ok(result)
    assert result.response_body == "ok \ufffd\ufffd end"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_large_body_is_cut_to_the_limit_and_the_next_post_still_succeeds(
    serve: Servers, sender: HttpSender, chunked: bool
) -> None:
    big = bytes(ord("a") + i % 26 for i in range(100 * 1024))

    async def respond(exchange: Exchange) -> bool:
        if exchange.request.number > 0:
            await exchange.send(http_response(200, b"second"))
            return KEEP_OPEN
        if not chunked:
            await exchange.send(http_response(500, big, reason="Internal Server Error"))
            return KEEP_OPEN
        head = http_response(500, b"", reason="Internal Server Error", content_length=False)
        await exchange.send(head.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"))
        for start in range(0, len(big), 8192):
            piece = big[start : start + 8192]
            await exchange.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        await exchange.send(b"0\r\n\r\n")
        return KEEP_OPEN

    server = await serve(respond)

    first = await post(sender, server.url())
    second = await post(sender, server.url())

    assert_ok(first, 500)
    assert RESPONSE_BODY_LIMIT == 4096
    assert first.response_body == big[:RESPONSE_BODY_LIMIT].decode()
    assert_ok(second)
    assert second.response_body == "second"
    assert len(server.requests) == 2


async def test_the_limit_counts_bytes_so_a_character_cut_in_half_is_replaced(
    serve: Servers, sender: HttpSender
) -> None:
    body = b"a" * (RESPONSE_BODY_LIMIT - 1) + "\u00e9".encode() + b"tail"

    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(200, body))
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_ok(result)
    assert result.response_body == "a" * (RESPONSE_BODY_LIMIT - 1) + "\ufffd"


async def test_a_chunked_body_written_in_pieces_is_assembled_and_the_connection_reused(
    serve: Servers, sender: HttpSender
) -> None:
    letters = b"abcdefghijklmnopqrstuvwxyz"

    async def respond(exchange: Exchange) -> bool:
        await exchange.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await asyncio.sleep(0.01)
        await exchange.send(b"6\r\nhello \r\n")
        await asyncio.sleep(0.01)
        await exchange.send(b"1A\r\n" + letters + b"\r\n3\r\n")
        await asyncio.sleep(0.01)
        await exchange.send(b"!!!\r\n")
        await asyncio.sleep(0.01)
        await exchange.send(b"0\r\n\r\n")
        return KEEP_OPEN

    server = await serve(respond)

    first = await post(sender, server.url())
    second = await post(sender, server.url())

    assert_ok(first)
    assert first.response_body == "hello " + letters.decode() + "!!!"
    assert_ok(second)
    assert second.response_body == first.response_body
    assert server.connections == 1


async def test_a_body_delimited_by_the_server_closing_is_read_to_the_end(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await exchange.send(b"part two")
        return HANG_UP

    server = await serve(respond)

    first = await post(sender, server.url())
    second = await post(sender, server.url())

    assert_ok(first)
    assert first.response_body == "part one, part two"
    assert_ok(second)
    assert second.response_body == "part one, part two"
    assert server.connections == 2


async def test_an_informational_100_continue_before_the_final_response_is_skipped(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0.01)
        await exchange.send(http_response(200, b"final"))
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_ok(result)
    assert result.response_body == "final"


async def test_a_redirect_is_reported_and_not_followed(serve: Servers, sender: HttpSender) -> None:
    async def respond(exchange: Exchange) -> bool:
        if exchange.request.target != "/hook":
            await exchange.send(http_response(200, b"followed"))
            return KEEP_OPEN
        host = exchange.request.header("Host")
        await exchange.send(
            http_response(
                302, b"moved", reason="Found", headers=[("Location", f"http://{host}/elsewhere")]
            )
        )
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url("/hook"))

    assert_ok(result, 302)
    assert result.response_headers["location"] == server.url("/elsewhere")
    assert result.response_body == "moved"
    assert server.targets() == ["/hook"]


# --------------------------------------------------------------------------- connections


async def test_sequential_posts_to_one_server_share_one_connection(
    serve: Servers, sender: HttpSender
) -> None:
    server = await serve(answer_ok)

    results = [await post(sender, server.url(), f"n={i}".encode()) for i in range(10)]

    for result in results:
        assert_ok(result)
    assert server.connections == 1
    assert [r.body for r in server.requests] == [f"n={i}".encode() for i in range(10)]
    assert [r.index_on_connection for r in server.requests] == list(range(10))


@pytest.mark.parametrize(
    "response",
    [
        http_response(200, b"ok", headers=[("Connection", "close")]),
        http_response(200, b"ok", version="HTTP/1.0"),
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_response_that_ends_the_connection_is_not_reused(
    serve: Servers, sender: HttpSender, response: bytes
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(response)
        return KEEP_OPEN  # the server does not close: the client must not reuse it anyway

    server = await serve(respond)

    first = await post(sender, server.url())
    second = await post(sender, server.url())

    assert_ok(first)
    assert_ok(second)
    assert [(r.connection, r.index_on_connection) for r in server.requests] == [(0, 0), (1, 0)]
    assert await server.until(lambda: server.open_connections == 0)


async def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(200, b"ok"))
        await asyncio.sleep(0.05)
        return HANG_UP  # closed while idle, without having said Connection: close

    server = await serve(respond)

    first = await post(sender, server.url())
    assert await server.until(lambda: server.connections == 1 and server.open_connections == 0)
    await asyncio.sleep(0.15)
    second = await post(sender, server.url())

    assert_ok(first)
    assert_ok(second)
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [0, 1]


@pytest.mark.parametrize("drop", ["eof", "reset"])
async def test_a_reused_connection_dropped_before_any_response_is_retried_once_on_a_new_one(
    serve: Servers, sender: HttpSender, drop: str
) -> None:
    async def respond(exchange: Exchange) -> bool:
        if exchange.request.index_on_connection == 0:
            await exchange.send(http_response(200, b"ok"))
            return KEEP_OPEN
        if drop == "reset":
            exchange.reset()
        return HANG_UP

    server = await serve(respond)

    first = await post(sender, server.url(), b"first")
    second = await post(sender, server.url(), b"second")

    assert_ok(first)
    assert_ok(second)
    assert [(r.body, r.connection, r.index_on_connection) for r in server.requests] == [
        (b"first", 0, 0),
        (b"second", 0, 1),
        (b"second", 1, 0),
    ]
    assert server.connections == 2


async def test_the_retry_after_a_dropped_reused_connection_happens_only_once(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        if exchange.request.number == 0:
            await exchange.send(http_response(200, b"ok"))
            return KEEP_OPEN
        return HANG_UP  # every later request: closed without a response

    server = await serve(respond)

    first = await post(sender, server.url(), b"first")
    second = await post(sender, server.url(), b"second")

    assert_ok(first)
    assert_failed(second, CLOSED_BEFORE_RESPONSE)
    assert [r.body for r in server.requests] == [b"first", b"second", b"second"]
    assert server.connections == 2


@pytest.mark.parametrize("responder", [hang_up, reset], ids=["eof", "reset"])
async def test_a_fresh_connection_dropped_before_any_response_is_not_retried(
    serve: Servers, sender: HttpSender, responder: Responder
) -> None:
    server = await serve(responder)

    result = await post(sender, server.url())

    assert_failed(result, CLOSED_BEFORE_RESPONSE)
    assert len(server.requests) == 1
    assert server.connections == 1


async def test_a_connection_closed_in_the_middle_of_the_status_line_is_closed_before_a_response(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        return HANG_UP

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_failed(result, CLOSED_BEFORE_RESPONSE)
    assert len(server.requests) == 1


async def test_no_more_connections_are_opened_than_max_connections(
    serve: Servers, senders: Senders
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await asyncio.sleep(0.2)
        await exchange.send(http_response(200, exchange.request.body))
        return KEEP_OPEN

    server = await serve(respond)
    sender = await senders(max_connections=2)

    results = await asyncio.gather(
        *(post(sender, server.url(), f"n={i}".encode()) for i in range(6))
    )

    for i, result in enumerate(results):
        assert_ok(result)
        assert result.response_body == f"n={i}"
    assert len(server.requests) == 6
    assert server.max_open_connections <= 2


async def test_close_closes_every_pooled_connection(serve: Servers) -> None:
    server = await serve(answer_ok)
    sender = HttpSender(max_connections=4)
    await sender.open()
    try:
        result = await post(sender, server.url())
        assert_ok(result)
        assert server.open_connections == 1
    finally:
        await sender.close()

    assert await server.until(lambda: server.open_connections == 0)
    assert server.closed_by_client == 1


async def test_posting_before_open_is_a_programming_error() -> None:
    sender = HttpSender(max_connections=4)

    with pytest.raises(RuntimeError):
        await sender.post(
            "http://127.0.0.1:9/hook", b"{}", {}, timeout_ms=1000, started_at_ms=STARTED_AT_MS
        )


# --------------------------------------------------------------------------- failures


async def test_a_receiver_that_never_answers_times_out_within_the_budget(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.reader.read()  # until the client gives up and closes
        return HANG_UP

    server = await serve(respond)

    t0 = time.monotonic()
    result = await post(sender, server.url(), timeout_ms=300)
    elapsed = time.monotonic() - t0

    assert_failed(result, "timeout")
    assert result.error == "timeout: no complete response within 300 ms"
    assert 0.25 <= elapsed < 2.0
    assert 250 <= result.duration_ms < 2000
    assert len(server.requests) == 1


async def test_a_body_that_trickles_past_the_budget_times_out(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            await exchange.send(b"x")
            await asyncio.sleep(0.05)
        return KEEP_OPEN

    server = await serve(respond)

    t0 = time.monotonic()
    result = await post(sender, server.url(), timeout_ms=300)
    elapsed = time.monotonic() - t0

    assert result.error == "timeout: no complete response within 300 ms"
    assert result.status_code is None
    assert elapsed < 2.0


async def test_a_tls_handshake_that_never_completes_times_out(
    serve: Servers, sender: HttpSender
) -> None:
    server = await serve(None)  # accepts TCP, never says a word

    t0 = time.monotonic()
    result = await post(sender, server.url("/x", scheme="https"), timeout_ms=300)
    elapsed = time.monotonic() - t0

    assert_failed(result, "timeout")
    assert result.error == "timeout: no complete response within 300 ms"
    assert elapsed < 2.0
    assert server.connections == 1


async def test_a_refused_connection_is_a_connection_failure(sender: HttpSender) -> None:
    port = closed_port()
    result = await post(sender, f"http://127.0.0.1:{port}/hook")

    assert_failed(result, "connection failed")
    assert result.error == f"connection failed: Connection refused (127.0.0.1:{port})"
    assert result.started_at_ms == STARTED_AT_MS
    assert result.duration_ms >= 0


async def test_a_host_that_does_not_resolve_is_a_connection_failure(sender: HttpSender) -> None:
    result = await post(sender, "http://no-such-host.invalid/hook", timeout_ms=5_000)

    assert_failed(result, "connection failed")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost", "not a url"])
async def test_a_url_that_is_not_http_with_a_host_is_invalid(sender: HttpSender, url: str) -> None:
    result = await post(sender, url)

    assert_failed(result, "invalid url")


async def test_bytes_that_are_not_http_are_an_invalid_response(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"NOT HTTP AT ALL\r\n\r\n")
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_failed(result, "invalid response")


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Big", "a" * 70_000)],
        [(f"X-Header-{i}", "b" * 1000) for i in range(70)],
    ],
    ids=["one-huge-header", "many-headers"],
)
async def test_response_headers_over_64_kib_are_an_invalid_response(
    serve: Servers, sender: HttpSender, headers: list[tuple[str, str]]
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(200, b"ok", headers=headers))
        return KEEP_OPEN

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_failed(result, "invalid response")


async def test_a_content_length_body_broken_off_is_reported(
    serve: Servers, sender: HttpSender
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        return HANG_UP

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_failed(result, "response body broken off")


async def test_a_chunked_body_broken_off_is_reported(serve: Servers, sender: HttpSender) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nonly"
        )
        return HANG_UP

    server = await serve(respond)

    result = await post(sender, server.url())

    assert_failed(result, "response body broken off")


# --------------------------------------------------------------------------- TLS


async def test_https_to_a_receiver_trusted_through_the_ssl_context_succeeds(
    serve: Servers,
    senders: Senders,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)
    sender = await senders(max_connections=4, ssl_context=client_tls)

    first = await post(sender, server.url("/x", scheme="https", host="localhost"), b"one")
    second = await post(sender, server.url("/x", scheme="https", host="localhost"), b"two")

    assert_ok(first)
    assert_ok(second)
    assert [r.body for r in server.requests] == [b"one", b"two"]
    assert server.requests[0].target == "/x"
    assert server.requests[0].header("Host") == f"localhost:{server.port}"
    assert server.connections == 1


async def test_https_to_a_certificate_outside_the_system_trust_store_fails_to_connect(
    serve: Servers, sender: HttpSender, server_tls: ssl.SSLContext
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)

    result = await post(sender, server.url("/x", scheme="https", host="localhost"))

    assert_failed(result, "connection failed")
    assert result.error is not None
    assert "certificate" in result.error.lower()
    assert server.requests == []


# --------------------------------------------------------------------------- address policy

NOT_ALLOWED = "connection failed: address not allowed: "


@pytest.fixture
async def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses the sender asks the event loop to connect to, in order."""
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection
    hosts: list[str] = []

    async def recording(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        hosts.append(str(host))
        return await create_connection(factory, host, port, **kw)

    monkeypatch.setattr(loop, "create_connection", recording)
    return hosts


def resolve_as(
    monkeypatch: pytest.MonkeyPatch, sender: HttpSender, *answers: list[tuple[str, int]]
) -> list[str]:
    """Make ``sender`` resolve every name to ``answers[0]``, then ``answers[1]``, ... (the
    last one from then on); returns the names it is asked for."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    monkeypatch.setattr(sender, "_resolve", resolve)
    return asked


async def test_the_default_address_policy_refuses_loopback_without_connecting(
    serve: Servers, senders: Senders, dialled: list[str]
) -> None:
    server = await serve(answer_ok)
    sender = await senders(address_policy=AddressPolicy())

    first = await post(sender, server.url())
    second = await post(sender, server.url())  # from the resolver's cache: checked again

    for result in (first, second):
        assert result.error == f"{NOT_ALLOWED}127.0.0.1 is a loopback address"
        assert result.status_code is None
        assert result.started_at_ms == STARTED_AT_MS
    assert dialled == []
    await asyncio.sleep(0.05)  # room for a connection that should not come
    assert server.connections == 0
    assert server.bytes_received == 0


@pytest.mark.parametrize(
    "policy",
    [AddressPolicy(allow_loopback=True), AddressPolicy.parse("127.0.0.0/8")],
    ids=["allow-loopback", "allow-list"],
)
async def test_a_policy_that_allows_loopback_posts_and_keeps_the_connection_alive(
    serve: Servers, senders: Senders, dialled: list[str], policy: AddressPolicy
) -> None:
    server = await serve(answer_ok)
    sender = await senders(address_policy=policy)

    first = await post(sender, server.url(), b"one")
    second = await post(sender, server.url(), b"two")

    assert_ok(first)
    assert_ok(second)
    assert [r.body for r in server.requests] == [b"one", b"two"]
    assert server.connections == 1
    assert dialled == ["127.0.0.1"]


async def test_an_allow_list_without_loopback_still_refuses_it(
    serve: Servers, senders: Senders, dialled: list[str]
) -> None:
    server = await serve(answer_ok)
    sender = await senders(address_policy=AddressPolicy.parse("10.0.0.0/8, fd00::/8"))

    result = await post(sender, server.url())

    assert result.error == f"{NOT_ALLOWED}127.0.0.1 is a loopback address"
    assert dialled == []
    assert server.connections == 0


async def test_a_name_that_resolves_to_loopback_is_refused_without_connecting(
    serve: Servers, senders: Senders, dialled: list[str]
) -> None:
    server = await serve(answer_ok)
    sender = await senders(address_policy=AddressPolicy())

    result = await post(sender, server.url(host="localhost"))

    assert result.error is not None
    assert result.error.startswith(NOT_ALLOWED), result.error
    # /etc/hosts may list ::1 before 127.0.0.1: the first refused one is named.
    assert result.error.endswith(("127.0.0.1 is a loopback address", "::1 is a loopback address"))
    assert dialled == []
    await asyncio.sleep(0.05)
    assert server.connections == 0


async def test_refused_addresses_among_the_resolved_ones_are_skipped_and_never_dialled(
    serve: Servers, senders: Senders, dialled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(answer_ok)
    sender = await senders(address_policy=AddressPolicy(allow_loopback=True))
    resolve_as(
        monkeypatch,
        sender,
        [
            ("169.254.169.254", server.port),
            ("10.0.0.7", server.port),
            ("::ffff:10.0.0.8", server.port),
            ("127.0.0.1", server.port),
        ],
    )

    result = await post(sender, server.url(host="receiver.test"))

    assert_ok(result)
    assert dialled == ["127.0.0.1"]
    assert server.requests[0].header("Host") == f"receiver.test:{server.port}"


async def test_a_name_that_rebinds_to_an_internal_address_is_refused_at_the_next_connection(
    serve: Servers, senders: Senders, dialled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def respond(exchange: Exchange) -> bool:
        await exchange.send(http_response(200, b"ok", headers=[("Connection", "close")]))
        return HANG_UP

    server = await serve(respond)
    sender = await senders(address_policy=AddressPolicy(allow_loopback=True))
    asked = resolve_as(
        monkeypatch, sender, [("127.0.0.1", server.port)], [("10.0.0.7", server.port)]
    )

    first = await post(sender, server.url(host="rebind.test"))
    second = await post(sender, server.url(host="rebind.test"))

    assert_ok(first)
    assert second.error == f"{NOT_ALLOWED}10.0.0.7 is a private address"
    assert asked == ["rebind.test", "rebind.test"]
    # The loop is handed the checked address, never the name it could resolve once more.
    assert dialled == ["127.0.0.1"]
    assert server.connections == 1


async def test_when_an_allowed_address_fails_its_failure_is_reported_not_the_refusals(
    senders: Senders, dialled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    sender = await senders(address_policy=AddressPolicy(allow_loopback=True))
    resolve_as(monkeypatch, sender, [("10.0.0.7", port), ("127.0.0.1", port), ("10.0.0.8", port)])

    result = await post(sender, f"http://receiver.test:{port}/hook")

    assert result.error == f"connection failed: Connection refused (127.0.0.1:{port})"
    assert dialled == ["127.0.0.1"]


async def test_https_connects_to_the_checked_address_and_verifies_the_url_host(
    serve: Servers,
    senders: Senders,
    dialled: list[str],
    monkeypatch: pytest.MonkeyPatch,
    ca: trustme.CA,
    client_tls: ssl.SSLContext,
) -> None:
    # A certificate for the name only: it verifies only if the name, not the address that
    # is dialled, is what the handshake checks.
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("receiver.test").configure_cert(server_tls)
    server = await serve(answer_ok, ssl_context=server_tls)
    sender = await senders(
        address_policy=AddressPolicy(allow_loopback=True), ssl_context=client_tls
    )
    resolve_as(monkeypatch, sender, [("10.0.0.7", server.port), ("127.0.0.1", server.port)])

    result = await post(sender, server.url("/x", scheme="https", host="receiver.test"))

    assert_ok(result)
    assert dialled == ["127.0.0.1"]
    assert server.requests[0].header("Host") == f"receiver.test:{server.port}"


async def test_without_an_address_policy_every_address_is_dialled_as_before(
    serve: Servers, sender: HttpSender, dialled: list[str]
) -> None:
    server = await serve(answer_ok)

    result = await post(sender, server.url())

    assert_ok(result)
    assert dialled == ["127.0.0.1"]
