"""Fixtures for the end-to-end suite: a launcher for ``croupier`` and real receivers.

Both are torn down whatever the test did: leftover processes are killed, receivers closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Launcher, Responder, WebhookReceiver

ReceiverFactory = Callable[..., Awaitable[WebhookReceiver]]


@pytest.fixture
def launcher(database_url: str, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(database_url, tmp_path)
    try:
        yield launcher
    finally:
        launcher.kill_all()


@pytest.fixture
async def receivers() -> AsyncIterator[ReceiverFactory]:
    """``await receivers(respond=..., delay_s=...)`` starts one more receiver."""
    started: list[WebhookReceiver] = []

    async def start(respond: Responder | None = None, *, delay_s: float = 0.0) -> WebhookReceiver:
        receiver = await WebhookReceiver(respond, delay_s=delay_s).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()
