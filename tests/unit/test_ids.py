"""Identifiers: a prefix and a ULID in Crockford base32."""

from __future__ import annotations

import os
import re
import threading

from croupier.domain.ids import new_id, random_bytes

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_an_id_is_its_prefix_and_a_ulid() -> None:
    prefix, body = new_id("evt").split("_")
    assert prefix == "evt"
    assert ULID.match(body)


def test_the_time_part_matches_the_published_ulid_example() -> None:
    # The ULID specification's example: 01ARYZ6S41... decodes to 1469918176385 ms.
    assert new_id("x", now_ms=1469918176385)[2:12] == "01ARYZ6S41"


def test_ids_sort_by_their_time() -> None:
    ids = [new_id("d", now_ms=ms) for ms in (1, 2, 1_000, 1_700_000_000_000, 2**48 - 1)]
    assert ids == sorted(ids)
    assert new_id("d", now_ms=2**48 - 1)[2:12] == "7ZZZZZZZZZ"


def test_ids_made_in_the_same_millisecond_differ() -> None:
    assert len({new_id("d", now_ms=5) for _ in range(1000)}) == 1000


def test_random_bytes_come_from_a_pool_that_threads_and_forked_children_never_share() -> None:
    seen = [random_bytes(10) for _ in range(2000)]  # spans several blocks
    other: list[bytes] = []
    worker = threading.Thread(target=lambda: other.extend(random_bytes(10) for _ in range(500)))
    worker.start()
    worker.join()
    assert len(set(seen) | set(other)) == 2500

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports back
        os.write(write_end, random_bytes(16))
        os._exit(0)
    os.waitpid(pid, 0)
    from_child = os.read(read_end, 16)
    os.close(read_end)
    os.close(write_end)
    assert from_child != random_bytes(16), "a forked child draws a block of its own"
