"""Time as an argument: the dispatcher and the services read the clock they are given."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in integer milliseconds since the epoch."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to: tests compress hours of retries into a call."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = SystemClock().now_ms() if start_ms is None else start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1000)


class ScaledClock:
    """The real clock running ``scale`` times faster from an origin.

    For tests and drills only (``CROUPIER_TIME_SCALE``): at a scale of 100 a retry due in
    30 s comes due after 0.3 s, while the network, timeouts included, keeps real time. It
    counts from the wall clock, so that a sender process given the same :attr:`origin`
    reads the same time as the process that started it.
    """

    def __init__(
        self, scale: float, *, start_ms: int | None = None, wall_origin_ns: int | None = None
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._wall_origin_ns = time.time_ns() if wall_origin_ns is None else wall_origin_ns
        self._origin_ms = self._wall_origin_ns // 1_000_000 if start_ms is None else start_ms

    @property
    def origin(self) -> tuple[int, int]:
        """(the clock's time at its origin in ms, the wall clock's then in ns)."""
        return self._origin_ms, self._wall_origin_ns

    def now_ms(self) -> int:
        elapsed_ns = time.time_ns() - self._wall_origin_ns
        return self._origin_ms + int(elapsed_ns * self.scale) // 1_000_000
