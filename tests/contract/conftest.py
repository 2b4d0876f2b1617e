from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from croupier.store.engine import make_engine
from croupier.store.migrate import migrate
from croupier.store.queue import SqlDeliveryQueue
from croupier.store.repositories import SqlStore


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    e = make_engine(database_url)
    await migrate(e)
    yield e
    await e.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlStore:
    return SqlStore(engine)


@pytest.fixture
def queue(engine: AsyncEngine) -> SqlDeliveryQueue:
    return SqlDeliveryQueue(engine)
