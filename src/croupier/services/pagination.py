"""Opaque cursors for list endpoints: ``{"data": [...], "next_cursor": "..." | null}``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from croupier.domain.errors import ValidationFailed

T = TypeVar("T")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None


def encode_cursor(position: int | str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"p": position})).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | str | None:
    """The position inside a cursor; a cursor that was not made here is a 422, not a 500."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = orjson.loads(raw)["p"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed("cursor is not valid", field="cursor") from exc
    if isinstance(position, bool) or not isinstance(position, int | str):
        raise ValidationFailed("cursor is not valid", field="cursor")
    if isinstance(position, int) and not 0 <= position < 2**63:
        raise ValidationFailed("cursor is not valid", field="cursor")
    if isinstance(position, str) and ("\x00" in position or len(position) > 200):
        raise ValidationFailed("cursor is not valid", field="cursor")
    return position


def int_cursor(cursor: str | None) -> int | None:
    position = decode_cursor(cursor)
    if position is not None and not isinstance(position, int):
        raise ValidationFailed("cursor is not valid", field="cursor")
    return position


def str_cursor(cursor: str | None) -> str | None:
    position = decode_cursor(cursor)
    if position is not None and not isinstance(position, str):
        raise ValidationFailed("cursor is not valid", field="cursor")
    return position


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be in 1..{MAX_LIMIT}", field="limit")
    return limit
