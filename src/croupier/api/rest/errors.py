"""The one mapping from croupier's error codes to HTTP, and the single error body:
``{"code", "message", "retryable", "trace_id"}`` (plus ``"field"`` when one field is at fault).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from croupier.api.rest.context import current_trace_id
from croupier.api.rest.responses import JSONResponse
from croupier.domain.errors import CroupierError

log = structlog.get_logger("croupier.api")

HTTP_STATUS: dict[str, int] = {
    "MALFORMED_JSON": 400,
    "UNAUTHORIZED": 401,
    "SESSION_INVALID": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "PLAYER_NOT_FOUND": 404,
    "BET_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "CONCURRENT_WRITE": 409,
    "DELIVERY_IN_FLIGHT": 409,
    "EVENT_TYPE_READ_ONLY": 409,
    "ENDPOINT_DISABLED": 409,
    "IDEMPOTENCY_IN_PROGRESS": 409,
    "DUPLICATE": 409,
    "INSUFFICIENT_FUNDS": 409,
    "BET_CANCELLED": 409,
    "BET_ALREADY_SETTLED": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    # A key reused for another request: 422, as the IETF Idempotency-Key draft says.
    "IDEMPOTENCY_MISMATCH": 422,
    "IDEMPOTENCY_KEY_REQUIRED": 422,
    "VALIDATION_FAILED": 422,
    "UNKNOWN_EVENT_TYPE": 422,
    "SCHEMA_VIOLATION": 422,
    "INVALID_URL": 422,
    "INVALID_AMOUNT": 422,
    "AMOUNT_PRECISION": 422,
    "UNKNOWN_CURRENCY": 422,
    "CURRENCY_MISMATCH": 422,
    "ROUND_MISMATCH": 422,
    "PLAYER_MISMATCH": 422,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

_STARLETTE_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


def error_response(
    code: str,
    message: str,
    *,
    retryable: bool = False,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "retryable": retryable,
        "trace_id": current_trace_id(),
    }
    if field is not None:
        body["field"] = field
    if extra:
        # What the error carries for the caller, e.g. the balance with INSUFFICIENT_FUNDS.
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=HTTP_STATUS.get(code, 500), headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CroupierError, _croupier_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path (the router names only the first)."""
    allowed = [
        method
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.routes
        )
    ]
    return ", ".join(allowed)


async def _croupier_error(_: Request, exc: CroupierError) -> JSONResponse:
    return croupier_error_response(exc)


def croupier_error_response(exc: CroupierError) -> JSONResponse:
    """The single error body of a croupier error, under its HTTP status."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "UNAUTHORIZED" else None
    return error_response(
        exc.code,
        exc.message,
        retryable=exc.retryable,
        field=exc.details.get("field"),
        headers=headers,
        extra={k: v for k, v in exc.details.items() if k != "field"},
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_error_response(exc.errors(), request.headers.get("content-type", ""))


def validation_error_response(errors: Sequence[Any], content_type: str) -> JSONResponse:
    """The answer to a request that does not validate: the first error, in plain words.
    ``errors`` are pydantic's (their ``loc`` may start with FastAPI's ``"body"``)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response("MALFORMED_JSON", "request body is not valid JSON")
    media = content_type.split(";")[0].strip().lower()
    if first.get("loc", ())[:1] == ("body",) and media and not media.endswith("json"):
        return error_response(
            "UNSUPPORTED_MEDIA_TYPE", "send the body as JSON with Content-Type: application/json"
        )
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "missing" and field is None:
        message = "a request body is required (a JSON object)"
    elif kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        message = f"{field} is not a known field"
    else:
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg"))
    if kind == "model_attributes_type" or (field is None and "dict" in str(first.get("msg"))):
        message = "request body must be a JSON object"
    return error_response("VALIDATION_FAILED", message, field=field)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    fallback = "VALIDATION_FAILED" if exc.status_code < 500 else "INTERNAL"
    code = _STARLETTE_CODES.get(exc.status_code, fallback)
    message = str(exc.detail)
    if exc.status_code == 400 and message == "There was an error parsing the body":
        # A JSON body that is not even text (bytes that are not UTF-8).
        return error_response("MALFORMED_JSON", "request body is not valid JSON")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        headers["Allow"] = allowed
    response = error_response(code, message, headers=headers)
    response.status_code = exc.status_code
    return response
