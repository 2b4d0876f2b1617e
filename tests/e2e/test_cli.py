"""The ``croupier`` command line against real databases and a real ``croupier serve``."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.conftest import ReceiverFactory
from tests.e2e.harness import (
    Launcher,
    create_endpoint,
    deliveries,
    eventually,
    free_port,
    publish,
    wait_statuses,
)

#: The root conftest's switch, read here too: importing that module would drag its imports in.
BACKENDS = os.environ.get("CROUPIER_TEST_BACKENDS", "sqlite,postgres").split(",")
KEY = re.compile(r"\bck_[A-Za-z0-9_-]{40,}\b")


async def test_migrate_on_a_fresh_database_exits_0_and_again_changes_nothing(
    launcher: Launcher, backend: str, database_url: str
) -> None:
    for _ in range(2):
        done = await launcher.run("migrate")
        assert done.code == 0, done.text
        assert "migrated" in done.text
        assert "newest schema" in done.text
    if backend == "sqlite":
        tables, revisions = _sqlite_schema(make_url(database_url).database)
        assert {"events", "deliveries", "attempts", "endpoints", "api_keys"} <= tables
        assert len(revisions) == 1


def _sqlite_schema(path: str | None) -> tuple[set[str], list[str]]:
    """The tables in the file, and its Alembic revisions."""
    assert path is not None and Path(path).exists()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        revisions = [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]
    return tables, revisions


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database beside the session's, dropped afterwards."""
    server = make_url(postgres_url)
    name = f"croupier_fresh_{uuid.uuid4().hex[:10]}"
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def run(sql: str) -> None:
        # Fixtures may be reached from inside a running event loop: use a thread of our own.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, execute(sql)).result()

    run(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL is not in this run")
async def test_serve_on_an_unmigrated_postgres_asks_for_migrate_which_makes_it_start(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    launcher = Launcher(fresh_postgres_url, tmp_path)
    try:
        refused = launcher.start()
        assert await refused.wait_exit(within_s=30) == 1
        said = " ".join(refused.output().split())
        assert "run `croupier migrate` first" in said, said
        assert "Traceback" not in said

        done = await launcher.run("migrate")
        assert done.code == 0, done.text
        serve = await launcher.serve()
        async with serve.api() as api:
            assert (await api.get("/v1/endpoints")).status_code == 200
        await serve.stop()
    finally:
        launcher.kill_all()


async def test_keys_create_prints_a_key_once_that_authenticates_against_a_running_serve(
    launcher: Launcher,
) -> None:
    serve = await launcher.serve()
    done = await launcher.run("keys", "create", "--tenant", "default", "--name", "ci")
    assert done.code == 0, done.text
    keys = KEY.findall(done.stdout)
    assert len(keys) == 1, done.stdout
    key = keys[0]
    assert key not in done.stderr, "the key goes to stdout, the words around it to stderr"

    async with serve.api(key) as api:
        assert (await api.get("/v1/endpoints")).status_code == 200
        # Not an admin key unless asked for one.
        assert (await api.get("/v1/tenants")).status_code == 403
    async with serve.api(key[:-1] + ("A" if key[-1] != "A" else "B")) as api:
        assert (await api.get("/v1/endpoints")).status_code == 401


async def test_keys_create_for_an_unknown_tenant_exits_1_and_says_so(launcher: Launcher) -> None:
    await launcher.serve()
    done = await launcher.run("keys", "create", "--tenant", "nobody-here")
    assert done.code == 1, done.text
    assert "no tenant 'nobody-here'" in done.text
    assert not KEY.search(done.text)
    assert "Traceback" not in done.text


async def test_replay_makes_dead_deliveries_due_again_and_prints_how_many(
    launcher: Launcher, receivers: ReceiverFactory
) -> None:
    receiver = await receivers()
    serve = await launcher.serve(idle_poll_seconds=0.2)
    nobody = f"http://127.0.0.1:{free_port()}/hook"
    async with serve.api() as api:
        endpoint = await create_endpoint(api, nobody, retry_schedule=[0])
        for n in range(3):
            await publish(api, f"evt_replay_{n}")
        await wait_statuses(api, {"dead": 3}, within_s=20)
        moved = await api.patch(f"/v1/endpoints/{endpoint['id']}", json={"url": receiver.url()})
        assert moved.status_code == 200, moved.text

        done = await launcher.run("replay", "--endpoint", endpoint["id"], "--status", "dead")
        assert done.code == 0, done.text
        assert f"3 deliveries of {endpoint['id']} are due again" in done.text

        await eventually(lambda: len(receiver.ids()) == 3, within_s=20, what="the replayed 3")
        await wait_statuses(api, {"succeeded": 3}, within_s=10)
        assert {d["attempts"] for d in await deliveries(api)} == {2}

        again = await launcher.run("replay", "--endpoint", endpoint["id"], "--status", "dead")
        assert again.code == 0, again.text
        assert f"0 deliveries of {endpoint['id']} are due again" in again.text
    assert sorted(receiver.ids()) == [f"evt_replay_{n}" for n in range(3)]
    assert len(receiver.arrivals) == 3


async def test_replay_with_an_unknown_status_exits_2(launcher: Launcher) -> None:
    done = await launcher.run("replay", "--endpoint", "ep_whatever", "--status", "everything")
    assert done.code == 2, done.text
    assert "--status must be dead, failed or all" in done.text
    assert "Traceback" not in done.text


async def test_replay_of_an_unknown_endpoint_exits_1_and_names_it(launcher: Launcher) -> None:
    await launcher.serve()
    done = await launcher.run("replay", "--endpoint", "ep_nosuchendpoint", "--status", "dead")
    assert done.code == 1, done.text
    assert "no endpoint 'ep_nosuchendpoint'" in done.text
    assert "Traceback" not in done.text
