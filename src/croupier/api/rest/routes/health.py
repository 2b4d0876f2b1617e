"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from croupier import __version__
from croupier.api.rest.deps import ContainerDep
from croupier.domain.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(c: ContainerDep) -> dict[str, Any]:
    """200 once the store answers; 503 in the error schema when it does not."""
    try:
        await c.ping()
    except Exception as exc:
        raise Unavailable("the database is not reachable") from exc
    return {"status": "ok", "version": __version__}
