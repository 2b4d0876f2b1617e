"""What the framework helpers answer; shared so that all three answer alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from croupier.receiver.dedupe import Dedupe
from croupier.receiver.errors import VerificationError
from croupier.receiver.event import Event
from croupier.receiver.verify import Verifier

DUPLICATE_STATUS = 200

R = TypeVar("R")


def failure_body(exc: VerificationError) -> dict[str, str]:
    """``{"error": <kind>, "message": <why>}``; the message never holds a secret."""
    return {"error": exc.kind, "message": exc.message}


def failure_headers(verifier: Verifier) -> dict[str, str]:
    """Extra headers of a refusal: a 401 names the scheme it wants, as HTTP asks."""
    return {"WWW-Authenticate": "Bearer"} if verifier.failure_status == 401 else {}


def duplicate_body(event: Event) -> dict[str, object]:
    """The body of the 2xx that acknowledges a duplicate without handling it again."""
    return {"duplicate": True, "id": event.id}


def is_success(status: int) -> bool:
    """croupier counts a delivery as done on any 2xx and retries anything else."""
    return 200 <= status < 300


def handle_once(
    dedupe: Dedupe | None, event: Event, view: Callable[[], R], status: Callable[[R], int]
) -> R | None:
    """Run ``view`` for ``event`` unless it was handled already (then None). The id stays
    claimed only when the view answers a 2xx: if it raises or answers anything else, the id
    is released, so the retry croupier sends is handled rather than dropped as a duplicate."""
    if dedupe is None:
        return view()
    if not dedupe.claim(event.id):
        return None
    try:
        response = view()
    except BaseException:
        dedupe.release(event.id)
        raise
    if not is_success(status(response)):
        dedupe.release(event.id)
    return response
