"""Identifiers: a type prefix plus a time-sortable, 128-bit random-enough body.

The body is a ULID (48-bit millisecond time, 80 random bits) in Crockford base32, so ids
sort by creation time and are safe to show in URLs and logs.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every pair of digits, so 13 lookups of 10 bits each make the 26 digits.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return ``"{prefix}_{ulid}"``, for example ``evt_01HZX3...``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])
