"""Shared query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from croupier.domain.envelope import parse_iso
from croupier.domain.errors import ValidationFailed
from croupier.services.pagination import DEFAULT_LIMIT

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200)]
DEFAULT = DEFAULT_LIMIT


def parse_time(value: str | None, field: str) -> int | None:
    """ISO 8601 with a zone (``2026-01-02T03:04:05Z``) to epoch ms; anything else is a 422."""
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise ValidationFailed(
            f"{field} must be an ISO 8601 time with a zone, e.g. 2026-01-02T03:04:05Z ({exc})",
            field=field,
        ) from exc
