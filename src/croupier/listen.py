"""``croupier listen``: a local webhook receiver for integrators.

Give croupier the URL it prints, and every delivery is verified with
:class:`croupier.receiver.Verifier`, checked for duplicates with :class:`MemoryDedupe`, and
shown as one block on the console: what arrived, whether it verified (and why not), and the
JSON body. The answers can be chosen (``status``, ``fail_first``) to watch croupier retry.

The server is the standard library's :class:`ThreadingHTTPServer`: nothing here needs
croupier's server side, and :func:`serve_listener` hands back the bound server so tests can
run it on port 0 in a thread. The secret is never printed.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast

from rich.console import Console, Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from croupier.receiver import DIALECTS, Dialect, MemoryDedupe, VerificationError, Verifier
from croupier.receiver._http import failure_headers

__all__ = [
    "BODY_SHOWN_BYTES",
    "MAX_BODY_BYTES",
    "Listener",
    "Received",
    "Reply",
    "run_listener",
    "serve_listener",
]

#: How much of a pretty-printed body is shown; the rest is counted, not printed.
BODY_SHOWN_BYTES = 4096
#: Bodies above this are refused with 413 before being read.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: The status of a ``fail_first`` refusal: a plain server error, which croupier retries.
FAIL_FIRST_STATUS = 500
#: The path the banner suggests; every path is accepted.
SUGGESTED_PATH = "/webhooks"


@dataclass(frozen=True)
class Received:
    """One POST the listener answered, as it was printed."""

    at: float
    method: str
    path: str
    status: int
    #: The event id; from the verified event, else (unverified) from ``webhook-id``.
    event_id: str | None
    event_type: str | None
    #: ``meta.attempt`` of an envelope; ``None`` for the flat data format or a refusal.
    attempt: int | None
    verified: bool
    #: ``"<kind>: <message>"`` of a failed verification, else ``None``.
    error: str | None
    duplicate: bool
    #: Answered ``FAIL_FIRST_STATUS`` on purpose, because of ``fail_first``.
    failed_on_purpose: bool


@dataclass(frozen=True)
class Reply:
    """The answer the listener sends to one POST."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class Listener(ThreadingHTTPServer):
    """The bound HTTP server of ``croupier listen``; :meth:`serve_forever` runs it.

    Built by :func:`serve_listener`. Every POST, to any path, is handled as a delivery;
    :attr:`received` records each answer. :meth:`server_close` also ends kept-alive
    connections, so a stop never waits on an idle client.
    """

    daemon_threads = True
    # Never wait on a handler thread at close: the connections are shut down instead.
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        verifier: Verifier,
        *,
        status: int,
        fail_first: int,
        console: Console,
    ) -> None:
        self.verifier = verifier
        self.status = status
        self.fail_first = fail_first
        self.console = console
        self.dedupe = MemoryDedupe()
        #: Every answered POST, oldest first.
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrivals: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        """The port actually bound (useful after asking for port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The URL to give croupier as the endpoint's ``url``."""
        host = str(self.server_address[0])
        if host in ("0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
            # Bound everywhere: the loopback name is one that surely reaches it.
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{SUGGESTED_PATH}"

    def handle_delivery(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Reply:
        """Verify, dedupe, pick the answer, and print the block; thread-safe."""
        pairs = list(headers)
        try:
            event = self.verifier.verify(pairs, body)
        except VerificationError as exc:
            answer = Reply(
                self.verifier.failure_status,
                {"error": exc.kind, "message": exc.message},
                failure_headers(self.verifier),
            )
            record = Received(
                at=time.time(),
                method=method,
                path=path,
                status=answer.status,
                event_id=_header(pairs, "webhook-id"),
                event_type=_unverified_type(body),
                attempt=None,
                verified=False,
                error=f"{exc.kind}: {exc.message}",
                duplicate=False,
                failed_on_purpose=False,
            )
            self._show(record, body)
            return answer

        arrival = 0
        if self.fail_first:
            with self._lock:
                self._arrivals[event.id] += 1
                arrival = self._arrivals[event.id]
        duplicate = False
        on_purpose = 0 < arrival <= self.fail_first
        if on_purpose:
            # Not claimed: the retry that follows must be handled as a first copy.
            answer = Reply(
                FAIL_FIRST_STATUS,
                {"error": "fail_first", "message": f"failing {arrival} of {self.fail_first}"},
                {},
            )
        elif not self.dedupe.claim(event.id):
            duplicate = True
            answer = Reply(200, {"duplicate": True, "id": event.id}, {})
        else:
            answer = Reply(self.status, {"ok": _is_success(self.status), "id": event.id}, {})
            if not _is_success(self.status):
                # croupier will send it again; that copy is not a duplicate of a success.
                self.dedupe.release(event.id)
        record = Received(
            at=time.time(),
            method=method,
            path=path,
            status=answer.status,
            event_id=event.id,
            event_type=event.type,
            attempt=event.attempt,
            verified=True,
            error=None,
            duplicate=duplicate,
            failed_on_purpose=on_purpose,
        )
        self._show(record, body)
        return answer

    def print_banner(self) -> None:
        """What to tell croupier, and how this listener answers; never the secret."""
        verifier = self.verifier
        lines = Text()
        lines.append("croupier listen", style="bold")
        lines.append(f" is receiving {verifier.dialect} webhooks\n")
        lines.append("  endpoint url   ")
        lines.append(self.url, style="bold cyan")
        lines.append("  (any path is accepted)\n")
        lines.append(f"  dialect        {verifier.dialect}: {_dialect_headers(verifier)}\n")
        if verifier.dialect != "bearer":
            lines.append(f"  tolerance      {verifier.tolerance_s} s\n")
        lines.append(f"  answers        {self.status} to verified deliveries")
        if self.fail_first:
            lines.append(f" ({FAIL_FIRST_STATUS} to the first {self.fail_first} of each event)")
        lines.append(
            f"\n                 200 to duplicates, {verifier.failure_status} to refused requests\n"
        )
        if self.server_address[0] in ("127.0.0.1", "::1", "localhost"):
            lines.append(
                "  croupier posts to this machine only when allowed: croupier serve --dev\n",
                style="dim",
            )
        lines.append("  Ctrl-C stops", style="dim")
        self._print(lines)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening and end every open connection."""
        super().server_close()
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            # The handler thread sees end-of-stream and closes the socket itself.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _show(self, record: Received, body: bytes) -> None:
        with self._lock:
            self.received.append(record)
        self._print(_block(record, body))

    def _print(self, renderable: RenderableType) -> None:
        # One lock for every print keeps concurrent deliveries' blocks whole.
        with self._lock:
            self.console.print(renderable)


class _Listener6(Listener):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: Listener
    # Keep-alive, as croupier's sender uses; every answer therefore carries Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "croupier-listen"
    # An idle kept-alive connection is closed after this many seconds.
    timeout = 60

    def do_POST(self) -> None:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self._reply(Reply(411, {"error": "length_required"}, {}), close=True)
            return
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self._reply(Reply(413, {"error": "too_large"}, {}), close=True)
            return
        body = self.rfile.read(length)
        path = self.path
        answer = self.server.handle_delivery(self.command, path, self.headers.items(), body)
        self._reply(answer)

    def do_GET(self) -> None:
        # A reachability check from a browser or curl: say what this is.
        text = b"croupier listen: POST croupier's webhooks to this URL\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        # The per-delivery block replaces the access log.
        return

    def _reply(self, answer: Reply, *, close: bool = False) -> None:
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)


def serve_listener(
    secrets: str | Sequence[str],
    *,
    dialect: str = "standard",
    host: str = "127.0.0.1",
    port: int = 9000,
    header_prefix: str = "Croupier",
    status: int = 200,
    fail_first: int = 0,
    tolerance_s: int = 300,
    console: Console | None = None,
) -> Listener:
    """Build the verifier and bind the listener; call ``serve_forever()`` on the result.

    ``secrets`` is what the endpoint's receiver holds: the ``whsec_`` secret (standard), the
    ``whpk_`` public key (ed25519), the shared string (hmac-hex) or the API key (bearer);
    several keys are all accepted, as during a rotation. ``port=0`` binds a free port
    (:attr:`Listener.port`). Raises ``ValueError`` for a bad option or key (never repeating
    the key) and ``OSError`` when the address cannot be bound.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    if not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status, 100 to 599")
    if fail_first < 0:
        raise ValueError("fail_first must not be negative")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    # One key goes in as secret=, so that an error about it names "secret", as typed.
    one, several = (keys[0], ()) if len(keys) == 1 else (None, keys)
    verifier = Verifier(
        cast(Dialect, dialect),
        one,
        secrets=several,
        tolerance_s=tolerance_s,
        header_prefix=header_prefix,
    )
    server_type = _Listener6 if ":" in host else Listener
    return server_type(
        (host, port),
        verifier,
        status=status,
        fail_first=fail_first,
        console=console or Console(),
    )


def run_listener(listener: Listener) -> None:
    """Print the banner and serve until Ctrl-C (or SIGTERM); always closes the server."""
    listener.print_banner()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        listener.serve_forever()
    except KeyboardInterrupt:
        listener.console.print("stopped", style="dim")
    finally:
        listener.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops the same clean way as Ctrl-C.
    raise KeyboardInterrupt


def _is_success(status: int) -> bool:
    return 200 <= status < 300


def _header(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key.lower() == name:
            return value.strip() or None
    return None


def _unverified_type(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    found = parsed.get("type", parsed.get("event_type"))
    return found if isinstance(found, str) else None


def _dialect_headers(verifier: Verifier) -> str:
    if verifier.dialect == "standard":
        return "webhook-id, webhook-timestamp, webhook-signature v1 (HMAC-SHA256)"
    if verifier.dialect == "ed25519":
        return "webhook-id, webhook-timestamp, webhook-signature v1a (Ed25519)"
    if verifier.dialect == "hmac-hex":
        prefix = verifier.header_prefix
        return f"X-{prefix}-Signature (sha256=<hex>), X-{prefix}-Timestamp"
    return "Authorization: Bearer <key>"


def _block(record: Received, body: bytes) -> Group:
    when = datetime.fromtimestamp(record.at).strftime("%H:%M:%S.%f")[:-3]
    title = Text.assemble(" ", (when, "dim"), "  ", (record.method, "bold"), " ", record.path)
    if record.duplicate:
        title.append("  DUPLICATE", style="bold yellow")
    title.append(" ")
    colour = "red" if not record.verified else "yellow" if record.duplicate else "green"
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="dim", no_wrap=True)
    rows.add_column(overflow="fold")
    unverified = "" if record.verified else "  (unverified)"
    rows.add_row("event", Text((record.event_id or "-") + unverified))
    rows.add_row("type", Text((record.event_type or "-") + unverified))
    rows.add_row("attempt", Text("-" if record.attempt is None else str(record.attempt)))
    if record.verified:
        rows.add_row("verified", Text("OK", style="bold green"))
    else:
        rows.add_row("verified", Text(f"FAILED {record.error}", style="bold red"))
    if record.duplicate:
        rows.add_row(
            "duplicate",
            Text("DUPLICATE: this event id was handled already", style="yellow"),
        )
    answered = Text(str(record.status), style="green" if _is_success(record.status) else "red")
    if record.failed_on_purpose:
        answered.append(" (--fail-first)", style="dim")
    rows.add_row("answered", answered)
    # A rule, not a box: the JSON below stays copyable as it is.
    return Group(Rule(title, align="left", style=colour), rows, _body_text(body))


def _body_text(body: bytes) -> Text:
    try:
        pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        pretty = body.decode("utf-8", errors="replace")
    encoded = pretty.encode("utf-8")
    if len(encoded) <= BODY_SHOWN_BYTES:
        text = Text(pretty)
        JSONHighlighter().highlight(text)
        return text
    shown = encoded[:BODY_SHOWN_BYTES].decode("utf-8", errors="ignore")
    text = Text(shown)
    JSONHighlighter().highlight(text)
    text.append(
        f"\n... truncated: {len(encoded) - BODY_SHOWN_BYTES} more bytes of "
        f"{len(encoded)} (the body was {len(body)} bytes)",
        style="dim",
    )
    return text
