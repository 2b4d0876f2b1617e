"""Fixtures of the receiver SDK's tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.receiver.support import REDIS_PORT, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The real Redis on 127.0.0.1. Unreachable means the test fails: it never skips."""
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"croupier:test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)
