"""Identifiers: a type prefix plus a time-sortable, 128-bit random-enough body.

The body is a ULID (48-bit millisecond time, 80 random bits) in Crockford base32, so ids
sort by creation time and are safe to show in URLs and logs.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every pair of digits, so 13 lookups of 10 bits each make the 26 digits.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
#: Random bytes are read from the system this many at a time, per thread: a sender makes
#: an id for every attempt, and one system call each was a fifth of the id's cost.
_POOL_BYTES = 4096


class _RandomPool(threading.local):
    """The operating system's random bytes, read in blocks; each thread has its own, so no
    two callers can ever be handed the same bytes."""

    def __init__(self) -> None:
        self.drop()

    def drop(self) -> None:
        self.block = b""
        self.offset = 0

    def take(self, n: int) -> bytes:
        start = self.offset
        if start + n > len(self.block):
            self.block, start = os.urandom(_POOL_BYTES), 0
        self.offset = start + n
        return self.block[start : start + n]


_pool = _RandomPool()
# A forked child must not hand out the rest of its parent's block.
os.register_at_fork(after_in_child=_pool.drop)


def random_bytes(n: int) -> bytes:
    """``n`` bytes (at most a block) from the operating system's random source."""
    return _pool.take(n)


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return ``"{prefix}_{ulid}"``, for example ``evt_01HZX3...``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(_pool.take(10), "big")
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])
