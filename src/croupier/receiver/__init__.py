"""croupier's receiver SDK: verify croupier's webhooks and drop duplicate deliveries.

The core needs only the standard library::

    from croupier.receiver import Verifier

    verifier = Verifier("standard", "whsec_...")
    event = verifier.verify(request_headers, raw_body)  # raises VerificationError

Optional parts are imported on use: ed25519 needs ``croupier[receiver-ed25519]``,
:class:`RedisDedupe` needs ``croupier[receiver-redis]``; the web framework helpers live in
``croupier.receiver.fastapi``, ``croupier.receiver.flask`` and ``croupier.receiver.django``,
and the typed models of the event data in ``croupier.receiver.models``.
"""

from __future__ import annotations

from croupier.receiver.dedupe import (
    DEFAULT_TTL_S,
    Dedupe,
    MemoryDedupe,
    RedisDedupe,
    SQLiteDedupe,
)
from croupier.receiver.errors import (
    MissingHeaderError,
    PayloadError,
    SignatureError,
    TimestampError,
    VerificationError,
)
from croupier.receiver.event import Event, EventFormat
from croupier.receiver.verify import (
    DIALECTS,
    MAX_HEADER_CHARS,
    MAX_SIGNATURES,
    Authenticated,
    Dialect,
    HeadersLike,
    Verifier,
)

__all__ = [
    "DEFAULT_TTL_S",
    "DIALECTS",
    "MAX_HEADER_CHARS",
    "MAX_SIGNATURES",
    "Authenticated",
    "Dedupe",
    "Dialect",
    "Event",
    "EventFormat",
    "HeadersLike",
    "MemoryDedupe",
    "MissingHeaderError",
    "PayloadError",
    "RedisDedupe",
    "SQLiteDedupe",
    "SignatureError",
    "TimestampError",
    "VerificationError",
    "Verifier",
]
