"""Sign requests the way croupier does, for testing your own webhook handlers.

Everything here produces what croupier would send; none of it is needed in production::

    from croupier.receiver.testing import envelope_body, sign

    body = envelope_body("round.completed", {"roundId": "r1"}, event_id="evt_1")
    headers = sign("standard", "whsec_...", body, msg_id="evt_1")
    response = client.post("/webhooks", content=body, headers=headers)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from croupier.receiver.verify import Dialect

__all__ = ["envelope_body", "generate_ed25519_keypair", "generate_secret", "sign"]


def generate_secret(size: int = 24) -> str:
    """A new ``whsec_`` secret holding ``size`` random bytes (24 to 64)."""
    if not 24 <= size <= 64:
        raise ValueError("size must be 24 to 64 bytes")
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def generate_ed25519_keypair() -> tuple[str, str]:
    """A new ``(whsk_ private seed, whpk_ public key)`` pair; needs ``cryptography``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whsk_" + base64.b64encode(seed).decode(), "whpk_" + base64.b64encode(public).decode()


def sign(
    dialect: Dialect,
    secret: str | Sequence[str],
    body: bytes | str,
    *,
    msg_id: str,
    timestamp: int | None = None,
    header_prefix: str = "Croupier",
) -> dict[str, str]:
    """The headers croupier would send with ``body`` on an endpoint of ``dialect``.

    ``secret`` is what the sender holds: ``whsec_`` for standard, ``whsk_`` (the private
    seed) for ed25519, the shared string for hmac-hex, the API key for bearer. Several
    secrets give one signature each, as during a rotation. ``timestamp`` defaults to now.
    """
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("sign needs at least one secret")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", "webhook-id": msg_id}
    standard_signed = f"{msg_id}.{ts}.".encode() + raw
    if dialect == "standard":
        v1 = [_hmac_sha256(_b64decode(k.removeprefix("whsec_")), standard_signed) for k in keys]
        signature = " ".join("v1," + _b64(s) for s in v1)
        headers |= {"webhook-timestamp": ts, "webhook-signature": signature}
    elif dialect == "ed25519":
        v1a = [_ed25519_sign(k, standard_signed) for k in keys]
        signature = " ".join("v1a," + _b64(s) for s in v1a)
        headers |= {"webhook-timestamp": ts, "webhook-signature": signature}
    elif dialect == "hmac-hex":
        signed = ts.encode() + b"." + raw
        entries = ",".join("sha256=" + _hmac_sha256(k.encode(), signed).hex() for k in keys)
        headers |= {
            f"X-{header_prefix}-Signature": entries,
            f"X-{header_prefix}-Timestamp": ts,
        }
    elif dialect == "bearer":
        headers["Authorization"] = f"Bearer {keys[0]}"
    else:
        raise ValueError(f"unknown dialect {dialect!r}")
    return headers


def envelope_body(
    event_type: str,
    data: Mapping[str, Any],
    *,
    event_id: str,
    attempt: int = 1,
    schema_version: str = "1.0.0",
    tenant_id: str = "default",
    occurred_at: str | None = None,
    environment: str = "test",
    trace_id: str = "0" * 32,
) -> bytes:
    """An envelope body as croupier posts it (compact JSON, UTF-8)."""
    stamp = occurred_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    envelope = {
        "id": event_id,
        "type": event_type,
        "schema_version": schema_version,
        "tenant_id": tenant_id,
        "occurred_at": stamp,
        "delivered_at": stamp,
        "data": dict(data),
        "meta": {"attempt": attempt, "environment": environment, "trace_id": trace_id},
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hashlib.sha256)


def _ed25519_sign(private_key: str, message: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = _b64decode(private_key.removeprefix("whsk_"))
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
