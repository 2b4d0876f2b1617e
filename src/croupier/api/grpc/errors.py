"""The one mapping from croupier's error codes to gRPC status codes, and the rich error
status every failed call carries.

A failed call has the gRPC code from :data:`GRPC_STATUS`, the error's message as its
details string, and a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer with
one ``google.rpc.ErrorInfo``: ``reason`` is croupier's stable code, ``domain`` is
``"croupier"``, and ``metadata`` holds ``retryable``, ``trace_id``, the ``field`` at fault
when there is one, and what the error carries for the caller (the balance with
``INSUFFICIENT_FUNDS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2

from croupier.domain.errors import CroupierError

#: ``google.rpc.ErrorInfo.domain`` of every error croupier answers.
DOMAIN = "croupier"
#: The trailer a rich error status travels in (what grpcio-status reads).
DETAILS_KEY = "grpc-status-details-bin"
#: What an unexpected failure says; the trace id finds it in croupier's logs.
INTERNAL_MESSAGE = "internal error; the trace id identifies it in the logs"

SC = grpc.StatusCode

GRPC_STATUS: dict[str, grpc.StatusCode] = {
    "VALIDATION_FAILED": SC.INVALID_ARGUMENT,
    "INVALID_AMOUNT": SC.INVALID_ARGUMENT,
    "AMOUNT_PRECISION": SC.INVALID_ARGUMENT,
    "UNKNOWN_CURRENCY": SC.INVALID_ARGUMENT,
    "CURRENCY_MISMATCH": SC.INVALID_ARGUMENT,
    "ROUND_MISMATCH": SC.INVALID_ARGUMENT,
    "PLAYER_MISMATCH": SC.INVALID_ARGUMENT,
    "IDEMPOTENCY_KEY_REQUIRED": SC.INVALID_ARGUMENT,
    "IDEMPOTENCY_MISMATCH": SC.INVALID_ARGUMENT,
    "NOT_FOUND": SC.NOT_FOUND,
    "PLAYER_NOT_FOUND": SC.NOT_FOUND,
    "BET_NOT_FOUND": SC.NOT_FOUND,
    "DUPLICATE": SC.ALREADY_EXISTS,
    "INSUFFICIENT_FUNDS": SC.FAILED_PRECONDITION,
    "BET_CANCELLED": SC.FAILED_PRECONDITION,
    "BET_ALREADY_SETTLED": SC.FAILED_PRECONDITION,
    "IDEMPOTENCY_IN_PROGRESS": SC.ABORTED,
    "CONCURRENT_WRITE": SC.ABORTED,
    "UNAUTHORIZED": SC.UNAUTHENTICATED,
    "SESSION_INVALID": SC.UNAUTHENTICATED,
    "FORBIDDEN": SC.PERMISSION_DENIED,
    "DEADLINE_EXCEEDED": SC.DEADLINE_EXCEEDED,
    "UNAVAILABLE": SC.UNAVAILABLE,
    "INTERNAL": SC.INTERNAL,
}


@dataclass(frozen=True)
class GrpcError:
    """What a failed call answers: its code, its details string and its trailing metadata."""

    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def grpc_error(
    code: str,
    message: str,
    *,
    retryable: bool,
    trace_id: str,
    details: Mapping[str, Any] | None = None,
) -> GrpcError:
    """The answer to a failure with croupier's ``code``; an unknown code is INTERNAL."""
    status_code = GRPC_STATUS.get(code, SC.INTERNAL)
    info = error_details_pb2.ErrorInfo(
        reason=code,
        domain=DOMAIN,
        metadata={
            **_flat(details or {}),
            "retryable": "true" if retryable else "false",
            "trace_id": trace_id,
        },
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=status_code.value[0], message=message, details=[packed])
    return GrpcError(
        status_code,
        message,
        ((DETAILS_KEY, status.SerializeToString()), ("x-trace-id", trace_id)),
    )


def from_croupier_error(error: CroupierError, trace_id: str) -> GrpcError:
    return grpc_error(
        error.code,
        error.message,
        retryable=error.retryable,
        trace_id=trace_id,
        details=error.details,
    )


def internal_error(trace_id: str) -> GrpcError:
    """An unexpected failure: nothing of it but the trace id reaches the caller."""
    return grpc_error("INTERNAL", INTERNAL_MESSAGE, retryable=False, trace_id=trace_id)


def _flat(details: Mapping[str, Any]) -> dict[str, str]:
    """An error's details as ErrorInfo metadata, whose values are strings: a field name as
    it is, and money (``{"minor_units", "amount", "currency"}``) as ``NAME_minor_units``,
    ``NAME_amount`` and ``NAME_currency``."""
    flat: dict[str, str] = {}
    for name, value in details.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            for part, inner in value.items():
                if inner is not None and not isinstance(inner, Mapping):
                    flat[f"{name}_{part}"] = _text(inner)
        else:
            flat[name] = _text(value)
    return flat


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
