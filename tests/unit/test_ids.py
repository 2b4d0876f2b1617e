"""Identifiers: a prefix and a ULID in Crockford base32."""

from __future__ import annotations

import re

from croupier.domain.ids import new_id

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
