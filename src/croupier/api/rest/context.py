"""Per-request context: the trace id, and the cap on request body size."""

from __future__ import annotations

import contextvars
import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from croupier.domain.errors import CroupierError, PayloadTooLarge, ValidationFailed

log = structlog.get_logger("croupier.api")

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

_TRACE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class RequestContext:
    """Pure ASGI middleware: every request gets a trace id (``X-Trace-Id`` echoed or made up,
    or taken from a W3C ``traceparent``), and a body larger than ``max_body_bytes`` is refused
    with 413 before the application sees any of it, whether or not it declared its length."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        trace_id = _trace_id(headers)
        token = trace_id_var.set(trace_id)

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_trace(message)

        try:
            if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
                await _refused(ValidationFailed("NUL characters are not allowed in a URL"))(
                    scope, receive, send_tracked
                )
                return
            body = await self._read_body(headers, receive)
            if body is None:
                error = PayloadTooLarge(
                    f"request body is over the {self.max_body_bytes // 1024} KiB limit"
                )
                await _refused(error)(scope, receive, send_tracked)
                return
            await self.app(scope, _replay(body, receive), send_tracked)
        except Exception:
            # Here, not in a handler outside this middleware, so the answer and the log
            # carry the request's trace id.
            log.exception("unhandled error", trace_id=trace_id)
            if not started:
                await _refused(
                    CroupierError("internal error; the trace id identifies it in the logs")
                )(scope, receive, send_tracked)
        finally:
            trace_id_var.reset(token)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        """The whole body, or None once it is known to be over the limit."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _refused(error: CroupierError) -> ASGIApp:
    from croupier.api.rest.errors import error_response

    return error_response(
        error.code, error.message, retryable=error.retryable, field=error.details.get("field")
    )


def _trace_id(headers: dict[str, str]) -> str:
    given = headers.get("x-trace-id", "").strip()
    if _TRACE_ID.match(given):
        return given
    parent = _TRACEPARENT.match(headers.get("traceparent", "").strip())
    if parent:
        return parent.group(1)
    return uuid.uuid4().hex


def current_trace_id() -> str:
    return trace_id_var.get() or uuid.uuid4().hex
