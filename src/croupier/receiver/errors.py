"""The errors :meth:`Verifier.verify` raises.

Every failure is a :class:`VerificationError`; the subclasses say which check failed. Their
messages are safe to log and to send back to the caller: they never hold a secret, a key or
the signature the verifier expected.
"""

from __future__ import annotations

__all__ = [
    "MissingHeaderError",
    "PayloadError",
    "SignatureError",
    "TimestampError",
    "VerificationError",
]


class VerificationError(Exception):
    """The request is not a webhook from croupier that this verifier can accept."""

    #: A short machine-readable name of the failed check, used in HTTP error bodies.
    kind: str = "verification"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignatureError(VerificationError):
    """No signature (or bearer token) matches any configured key, or the header is malformed."""

    kind = "signature"


class TimestampError(VerificationError):
    """The signed timestamp is not an integer, or lies outside the tolerance."""

    kind = "timestamp"

    def __init__(self, message: str, *, timestamp: int | None = None) -> None:
        super().__init__(message)
        #: The timestamp the request carried, when it was an integer.
        self.timestamp = timestamp


class MissingHeaderError(VerificationError):
    """A header the dialect needs is absent or empty."""

    kind = "missing_header"

    def __init__(self, header: str) -> None:
        super().__init__(f"missing header {header}")
        #: The name of the missing header, as the dialect spells it.
        self.header = header


class PayloadError(VerificationError):
    """The signature is good but the body is not a croupier event (not JSON, wrong shape)."""

    kind = "payload"
