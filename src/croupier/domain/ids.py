"""Identifiers: a type prefix plus a time-sortable, 128-bit random-enough body.

The body is a ULID (48-bit millisecond time, 80 random bits) in Crockford base32, so ids
sort by creation time and are safe to show in URLs and logs.
"""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: RFC 4648 base32 digits to Crockford's, so the C encoder does the work.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return ``"{prefix}_{ulid}"``, for example ``evt_01HZX3...``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    # 20 bytes are 32 base32 digits; the first 6 only carry the 32 zero bits above the
    # 128-bit value, and the last 26 are the ULID.
    digits = base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_CROCKFORD)
    return f"{prefix}_{digits.decode()}"
