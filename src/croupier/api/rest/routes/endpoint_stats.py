"""Endpoint stats: how an endpoint's deliveries went over the last 5 minutes, hour and day."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import breaker_out
from croupier.domain.envelope import iso_ms, iso_ms_or_none
from croupier.services.endpoint_stats import EndpointStats, WindowStats

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])


@router.get("/{endpoint_id}/stats")
async def get_endpoint_stats(endpoint_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    """Attempts, successes, failures, success rate, latency percentiles and the latest
    error over the windows ``5m``, ``1h`` and ``24h``, counted in whole minutes."""
    return endpoint_stats_out(await c.endpoint_stats.stats(p.tenant_id, endpoint_id))


def endpoint_stats_out(stats: EndpointStats) -> dict[str, Any]:
    """The answer of ``GET /v1/endpoints/{id}/stats``: the windows, and the endpoint's
    health as it stands (its breaker, since when it has failed, whether it is disabled)."""
    e = stats.endpoint
    return {
        "endpoint_id": stats.endpoint_id,
        "as_of": iso_ms(stats.as_of_ms),
        "breaker": breaker_out(e),
        "failing_since": iso_ms_or_none(e.failing_since_ms),
        "last_success_at": iso_ms_or_none(e.last_success_at_ms),
        "disabled": e.disabled,
        "windows": {name: _window_out(w) for name, w in stats.windows.items()},
    }


def _window_out(w: WindowStats) -> dict[str, Any]:
    error = w.last_error
    return {
        "attempts": w.attempts,
        "succeeded": w.succeeded,
        "failed": w.failed,
        "success_rate": w.success_rate,
        "latency_ms": {"p50": w.latency_ms.p50, "p95": w.latency_ms.p95, "p99": w.latency_ms.p99},
        "last_error": (
            None
            if error is None
            else {
                "message": error.message,
                "status_code": error.status_code,
                "at": iso_ms(error.at_ms),
            }
        ),
    }
