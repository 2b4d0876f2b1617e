"""What the framework helpers answer; shared so that all three answer alike."""

from __future__ import annotations

from croupier.receiver.errors import VerificationError
from croupier.receiver.event import Event
from croupier.receiver.verify import Verifier

DUPLICATE_STATUS = 200


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
