from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from croupier.store.engine import Database, open_database
from croupier.store.migrate import migrate
from croupier.store.queue import SqlDeliveryQueue
from croupier.store.repositories import SqlStore


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    d = open_database(database_url)
    await migrate(d)
    yield d
    await d.close()


@pytest.fixture
def store(db: Database) -> SqlStore:
    return SqlStore(db)


@pytest.fixture
def queue(db: Database) -> SqlDeliveryQueue:
    return SqlDeliveryQueue(db)
