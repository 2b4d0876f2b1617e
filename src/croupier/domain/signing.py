"""Signing dialects. A signer turns (message id, timestamp, body) into request headers.

The dialect is chosen per endpoint; :func:`signer_for` is the one place that knows them all.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Sequence
from typing import Protocol

from croupier.domain.errors import ValidationFailed

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
DIALECTS = ("standard",)


class Signer(Protocol):
    """Signs one request; returns the headers that carry the signature."""

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]: ...


def signer_for(dialect: str, secrets: Sequence[str]) -> Signer:
    """Return the signer of ``dialect`` keyed with ``secrets`` (newest first)."""
    if dialect == "standard":
        return StandardWebhooksSigner(secrets)
    raise ValidationFailed(f"unknown signing dialect {dialect!r}", field="dialect")


class StandardWebhooksSigner:
    """Standard Webhooks v1: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

    With several secrets (during a rotation) the header carries one signature per secret,
    separated by spaces; a receiver that knows any of them accepts.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("a signer needs at least one secret")
        self._keys = [secret_key_bytes(s) for s in secrets]

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        ts = str(timestamp)
        signed = b"".join((msg_id.encode(), b".", ts.encode(), b".", body))
        # hmac.digest is the one-shot C path: no HMAC object per request.
        signature = " ".join(
            "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
            for key in self._keys
        )
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("secret must be whsec_ followed by base64", field="secret") from exc


def validate_secret(secret: str) -> str:
    """Accept ``whsec_`` + base64 of 24 to 64 bytes, the Standard Webhooks range."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValidationFailed("secret must start with whsec_", field="secret")
    key = secret_key_bytes(secret)
    if not 24 <= len(key) <= 64:
        raise ValidationFailed("secret must hold 24 to 64 bytes of key", field="secret")
    return secret
