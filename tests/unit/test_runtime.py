"""Process tuning: the collector settings both long-running processes start serving with."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from croupier.runtime import GC_OLDER_THRESHOLDS, GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    settle_heap()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)
    assert gc.get_freeze_count() > 0
    # Young collections stay much rarer than CPython's default of every 700 allocations.
    assert GC_YOUNG_THRESHOLD >= 10 * 700


def test_cyclic_garbage_is_still_collected_after_settling() -> None:
    code = (
        "import gc, weakref\n"
        "from croupier.runtime import settle_heap\n"
        "settle_heap()\n"
        "class Node: pass\n"
        "refs = []\n"
        "for _ in range(200_000):\n"
        "    a, b = Node(), Node(); a.b, b.a = b, a; refs.append(weakref.ref(a))\n"
        "    del a, b\n"
        "alive = sum(r() is not None for r in refs)\n"
        "print(alive)\n"
    )
    out = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    # Without a collector run, all 200,000 cycles would still be alive.
    assert int(out.stdout) < 50_000
