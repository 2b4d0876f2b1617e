from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from croupier.store.engine import Database, open_database
from croupier.store.migrate import migrate
from croupier.store.queue import SqlDeliveryQueue
from croupier.store.repositories import SqlStore
from croupier.store.secretbox import SecretBox


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    d = open_database(database_url)
    await migrate(d)
    yield d
    await d.close()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([SecretBox.new_key()])


@pytest.fixture
def store(db: Database, box: SecretBox) -> SqlStore:
    return SqlStore(db, box=box)


@pytest.fixture
def queue(db: Database, box: SecretBox) -> SqlDeliveryQueue:
    return SqlDeliveryQueue(db, box=box)
