"""Signing dialects. A signer turns (message id, timestamp, body) into request headers.

The dialect is chosen per endpoint; :func:`signer_for` is the one place that knows them all,
and :func:`validate_secret` / :func:`generate_secret` the one place that knows what secret
each one takes. Every signer takes its secrets newest first: during a rotation's grace
window a delivery carries a signature for each, so a receiver that knows either accepts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets as _secrets
from collections.abc import Sequence
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from croupier.domain.errors import ValidationFailed

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
DIALECTS = ("standard", "ed25519", "hmac-hex", "bearer")
DEFAULT_HEADER_PREFIX = "Croupier"
_HEADER_PREFIX = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
#: What a bearer key or an hmac-hex secret may hold: visible ASCII, no spaces.
_TOKEN = re.compile(r"^[\x21-\x7e]{16,512}$")


class Signer(Protocol):
    """Signs one request; returns the headers that carry the signature."""

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]: ...


def signer_for(
    dialect: str, secrets: Sequence[str], *, header_prefix: str = DEFAULT_HEADER_PREFIX
) -> Signer:
    """The signer of ``dialect`` keyed with ``secrets`` (newest first)."""
    if not secrets:
        raise ValueError("a signer needs at least one secret")
    if dialect == "standard":
        return StandardWebhooksSigner(secrets)
    if dialect == "ed25519":
        return Ed25519Signer(secrets)
    if dialect == "hmac-hex":
        return HmacHexSigner(secrets, header_prefix=header_prefix)
    if dialect == "bearer":
        return BearerSigner(secrets)
    raise ValidationFailed(f"unknown signing dialect {dialect!r}", field="dialect")


class StandardWebhooksSigner:
    """Standard Webhooks v1: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
    one signature per secret, separated by spaces."""

    def __init__(self, secrets: Sequence[str]) -> None:
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


class Ed25519Signer:
    """Standard Webhooks v1a: ``v1a,<base64 Ed25519 signature of "{id}.{timestamp}.{body}">``
    with ``whsk_`` keys; receivers verify with the matching ``whpk_`` public key."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = [Ed25519PrivateKey.from_private_bytes(signing_seed(s)) for s in secrets]

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        ts = str(timestamp)
        signed = b"".join((msg_id.encode(), b".", ts.encode(), b".", body))
        signature = " ".join(
            "v1a," + base64.b64encode(key.sign(signed)).decode() for key in self._keys
        )
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}


class HmacHexSigner:
    """The provider-guide dialect: ``X-{Prefix}-Signature: sha256=<hex HMAC-SHA256 of
    "{timestamp}.{body}">`` and ``X-{Prefix}-Timestamp``. The HMAC key is the secret string
    itself, as the guide's sample code uses it. Several signatures are comma-separated."""

    def __init__(self, secrets: Sequence[str], *, header_prefix: str) -> None:
        self._keys = [s.encode() for s in secrets]
        self._signature = f"X-{header_prefix}-Signature"
        self._timestamp = f"X-{header_prefix}-Timestamp"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        ts = str(timestamp)
        signed = b"".join((ts.encode(), b".", body))
        signature = ",".join(
            "sha256=" + hmac.digest(key, signed, "sha256").hex() for key in self._keys
        )
        return {"webhook-id": msg_id, self._timestamp: ts, self._signature: signature}


class BearerSigner:
    """``Authorization: Bearer <key>``: no body signature. A request carries one key, so
    a rotation switches to the new key at once (see ``docs/dialects.md``)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._authorization = f"Bearer {secrets[0]}"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {"webhook-id": msg_id, "Authorization": self._authorization}


def signature_headers(dialect: str, header_prefix: str = DEFAULT_HEADER_PREFIX) -> frozenset[str]:
    """The header names (lower case) a dialect sets, which an endpoint may not set itself."""
    if dialect in ("standard", "ed25519"):
        return frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
    if dialect == "hmac-hex":
        prefix = header_prefix.lower()
        return frozenset({"webhook-id", f"x-{prefix}-signature", f"x-{prefix}-timestamp"})
    return frozenset({"webhook-id", "authorization"})


def generate_secret(dialect: str = "standard") -> str:
    """A new secret of the kind ``dialect`` takes."""
    if dialect == "ed25519":
        return SIGNING_KEY_PREFIX + base64.b64encode(os.urandom(32)).decode()
    if dialect == "bearer":
        return _secrets.token_urlsafe(32)
    # standard and hmac-hex: hmac-hex keys with the string itself, so any secret works there.
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def validate_secret(secret: str, dialect: str = "standard") -> str:
    """Refuse a secret ``dialect`` cannot sign with; the message never repeats it."""
    if dialect == "standard":
        if not secret.startswith(SECRET_PREFIX):
            raise ValidationFailed("secret must start with whsec_", field="secret")
        key = secret_key_bytes(secret)
        if not 24 <= len(key) <= 64:
            raise ValidationFailed("secret must hold 24 to 64 bytes of key", field="secret")
    elif dialect == "ed25519":
        signing_seed(secret)
    elif not _TOKEN.fullmatch(secret):
        raise ValidationFailed(
            "secret must be 16 to 512 visible ASCII characters without spaces", field="secret"
        )
    return secret


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("secret must be whsec_ followed by base64", field="secret") from exc


def signing_seed(secret: str) -> bytes:
    """The 32-byte Ed25519 seed inside a ``whsk_`` key (a 64-byte seed-and-public-key form
    is accepted too: its first half is the seed)."""
    if not secret.startswith(SIGNING_KEY_PREFIX):
        raise ValidationFailed("an ed25519 secret must start with whsk_", field="secret")
    try:
        raw = base64.b64decode(secret.removeprefix(SIGNING_KEY_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("secret must be whsk_ followed by base64", field="secret") from exc
    if len(raw) not in (32, 64):
        raise ValidationFailed("an ed25519 secret must hold 32 bytes of key", field="secret")
    return raw[:32]


def public_key(secret: str) -> str:
    """The ``whpk_`` public key that verifies what the ``whsk_`` ``secret`` signs."""
    key = Ed25519PrivateKey.from_private_bytes(signing_seed(secret))
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def validate_header_prefix(prefix: str) -> str:
    """``X-{prefix}-Signature`` must be a valid header name: letters, digits and inner dashes."""
    if not _HEADER_PREFIX.fullmatch(prefix):
        raise ValidationFailed(
            "header_prefix must be 1 to 32 letters, digits or inner dashes", field="header_prefix"
        )
    return prefix
