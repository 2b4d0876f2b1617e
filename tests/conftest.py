"""Fixtures shared by every suite.

Tests that touch the store run once per backend: an SQLite file per test, and one
PostgreSQL database per session (created fresh, truncated between tests, dropped at the
end). ``CROUPIER_TEST_BACKENDS=sqlite`` narrows a local run; CI runs both, and a PostgreSQL
that cannot be reached fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build
from croupier.config import Settings
from croupier.domain.clock import ManualClock
from croupier.logs import configure_logging
from croupier.store.engine import open_database
from croupier.store.migrate import migrate
from tests.support.receiver import Receiver

configure_logging("warning")

ADMIN_KEY = "ck_test_admin_key_0123456789abcdefghijklmnop"
#: PostgreSQL needs CROUPIER_SECRET_KEY; SQLite runs keep theirs beside the file.
SECRET_KEY = "Cq6c0sY0mH8b8m1Jx0K9qf3m6n1Yk0cQ2b4d6f8h0j2="
BACKENDS = [b for b in os.environ.get("CROUPIER_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
PG_ADMIN_URL = os.environ.get(
    "CROUPIER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = (
    "idempotency_records, credits, bets, postings, wallet_transactions, wallet_sessions, "
    "players, currencies, attempts, deliveries, events, endpoints, event_types, api_keys, tenants"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session."""
    name = f"croupier_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        db = open_database(url)
        try:
            await migrate(db)
        finally:
            await db.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    url = admin.set(database=name).render_as_string(hide_password=False)
    _run_in_thread(create)
    yield url
    _run_in_thread(drop)


def _run_in_thread(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Session set-up may be reached from inside a test's event loop: run it beside it."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work()).result()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest
) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/croupier.db"
    url: str = request.getfixturevalue("postgres_url")
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        admin_key=ADMIN_KEY,
        secret_key=None if database_url.startswith("sqlite") else SECRET_KEY,
        # The receivers of the tests listen on 127.0.0.1.
        allow_loopback=True,
        dispatcher_enabled=False,
        retry_jitter=0.0,
        # In-process sending: the tests drive the dispatcher on a manual clock.
        senders=0,
    )


@pytest.fixture
async def container(settings: Settings, clock: ManualClock) -> AsyncIterator[Container]:
    c = await build(settings, clock=clock, rng=random.Random(7), auto_migrate=True)
    yield c
    await c.close()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://croupier.test",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as c:
        yield c


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver.start()
    yield r
    await r.stop()
