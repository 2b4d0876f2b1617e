"""Endpoint secrets at rest: sealed in the database with a key it never holds, the key kept
beside a SQLite file or required for PostgreSQL, older rows sealed on start, the key itself
rotated, the CLI's ``secrets`` commands, and no secret in any log."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build, seal_secrets
from croupier.cli import app as cli_app
from croupier.config import Settings
from croupier.domain.clock import ManualClock
from croupier.store.secretbox import SecretKeyError
from tests.conftest import ADMIN_KEY
from tests.integration.conftest import create_endpoint, get_json, publish
from tests.support.receiver import Receiver

SEALED = "sealed:v1:"
#: An IP literal (the tests allow loopback): creating it asks no DNS server.
HOOK = "http://127.0.0.1:9/croupier"


def with_key(settings: Settings, key: str | None) -> Settings:
    return settings.model_copy(update={"secret_key": SecretStr(key) if key else None})


def sqlite_settings(path: Path, key: str | None = None) -> Settings:
    return Settings(
        database_url=f"sqlite:///{path}",
        admin_key=ADMIN_KEY,
        secret_key=key,
        allow_loopback=True,
        dispatcher_enabled=False,
        senders=0,
    )


@asynccontextmanager
async def running(
    settings: Settings, clock: ManualClock, **options: Any
) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    """A container of its own on ``settings`` (migrated unless told), and an admin client."""
    options.setdefault("auto_migrate", True)
    container = await build(settings, clock=clock, **options)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container)),
            base_url="http://croupier.test",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            yield container, client
    finally:
        await container.close()


async def stored(container: Container) -> dict[str, tuple[str, str | None]]:
    """Each endpoint's ``secret`` and ``previous_secret`` columns, as the database holds them."""
    rows = await container.db.run(
        lambda conn: conn.execute(text("SELECT id, secret, previous_secret FROM endpoints")).all(),
        write=False,
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def write_in_the_clear(
    container: Container, endpoint_id: str, secret: str, previous: str | None = None
) -> None:
    """Put a secret in the table unsealed, as a database from before sealing held it."""
    await container.db.run(
        lambda conn: conn.execute(
            text("UPDATE endpoints SET secret = :s, previous_secret = :p WHERE id = :id"),
            {"s": secret, "p": previous, "id": endpoint_id},
        )
    )


def opened(token: str, key: str) -> str:
    assert token.startswith(SEALED), token
    return Fernet(key.encode()).decrypt(token.removeprefix(SEALED).encode()).decode()


def key_of(settings: Settings) -> str:
    """The sealing key: the setting's first, or the one kept beside the SQLite file."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().split(",")[0]
    database = make_url(settings.database_url).database
    assert database
    return Path(database + ".key").read_text().strip()


async def secret_of(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    return await get_json(client, f"/v1/endpoints/{endpoint_id}/secret")


def standard_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()


def whsec(fill: bytes) -> str:
    return "whsec_" + base64.b64encode(fill * 24).decode()


# -- sealed in the table ------------------------------------------------------------------------


async def test_the_secret_columns_hold_fernet_tokens_and_never_the_secret(
    client: httpx.AsyncClient, container: Container, settings: Settings, backend: str
) -> None:
    secrets: list[str] = []
    for dialect in ("standard", "ed25519", "hmac-hex", "bearer"):
        ep = await create_endpoint(client, HOOK, dialect=dialect)
        secrets.append(ep["secret"])
        rotated = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        secrets.append(rotated.json()["secret"])
    rows = await stored(container)
    assert len(rows) == 4
    key = key_of(settings)
    columns = [value for row in rows.values() for value in row]
    assert all(value is not None and value.startswith(SEALED) for value in columns)
    assert sorted(opened(value, key) for value in columns if value is not None) == sorted(secrets)
    for secret in secrets:
        assert not any(secret in str(value) for value in columns)
    if backend == "sqlite":
        # nor anywhere in the database's files, its write-ahead log included
        database = make_url(settings.database_url).database
        assert database
        files = [p for p in Path(database).parent.iterdir() if p.name.startswith("croupier.db")]
        on_disk = b"".join(p.read_bytes() for p in files if not p.name.endswith(".key"))
        assert on_disk and not any(s.encode() in on_disk for s in secrets)


async def test_sqlite_without_a_key_setting_keeps_one_beside_the_database_and_reuses_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    database = tmp_path / "data" / "croupier.db"
    key_file = tmp_path / "data" / "croupier.db.key"
    settings = sqlite_settings(database)
    async with running(settings, clock) as (container, client):
        ep = await create_endpoint(client, HOOK)
        [(sealed, _)] = (await stored(container)).values()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    Fernet(key.encode())  # a valid Fernet key
    assert opened(sealed, key) == ep["secret"]
    async with running(settings, clock) as (_, client):
        assert (await secret_of(client, ep["id"]))["secret"] == ep["secret"]
    assert key_file.read_text().strip() == key, "the key is kept, not made again"


async def test_postgresql_without_a_key_refuses_to_start_and_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CROUPIER_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        database_url="postgresql://croupier@127.0.0.1:5432/croupier_no_such_db",
        admin_key=ADMIN_KEY,
        dispatcher_enabled=False,
        senders=0,
    )
    assert settings.secret_key is None
    with pytest.raises(SecretKeyError, match="CROUPIER_SECRET_KEY"):
        await build(settings, auto_migrate=True)
    assert not os.listdir(tmp_path), "no key is made for PostgreSQL"


async def test_a_key_the_secrets_were_not_sealed_with_cannot_open_them(
    settings: Settings, clock: ManualClock
) -> None:
    first, wrong = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with running(with_key(settings, first), clock) as (_, client):
        ep = await create_endpoint(client, HOOK)
    # A process that neither migrates nor owns the store opens secrets only when it reads.
    async with running(with_key(settings, wrong), clock, auto_migrate=False, own_store=False) as (
        container,
        _,
    ):
        tenant_id = await container.endpoints.tenant_of(ep["id"])
        with pytest.raises(SecretKeyError, match="CROUPIER_SECRET_KEY") as caught:
            await container.endpoints.get(tenant_id, ep["id"])
        assert ep["secret"] not in str(caught.value)
    # One that seals on start refuses to start with it.
    with pytest.raises(SecretKeyError):
        await build(with_key(settings, wrong), clock=clock, auto_migrate=True)
    async with running(with_key(settings, first), clock) as (_, client):
        assert (await secret_of(client, ep["id"]))["secret"] == ep["secret"]


@pytest.mark.parametrize(
    "key", ["not-a-fernet-key", "short,", base64.b64encode(b"k" * 16).decode()]
)
async def test_a_malformed_key_setting_refuses_to_start(
    settings: Settings, clock: ManualClock, key: str
) -> None:
    with pytest.raises(SecretKeyError, match="croupier secrets new-key"):
        await build(with_key(settings, key), clock=clock, auto_migrate=True)


# -- rows from before sealing -------------------------------------------------------------------


async def test_seal_secrets_seals_rows_stored_in_the_clear_and_they_still_sign(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, settings: Settings
) -> None:
    ep = await create_endpoint(client, receiver.url())
    sealed_alone = await create_endpoint(client, HOOK)
    plain, previous = whsec(b"p"), whsec(b"q")
    await write_in_the_clear(container, ep["id"], plain, previous)
    assert (await stored(container))[ep["id"]] == (plain, previous)
    assert await seal_secrets(container.store) == 1
    assert await seal_secrets(container.store) == 0
    rows = await stored(container)
    key = key_of(settings)
    assert (opened(rows[ep["id"]][0], key), opened(str(rows[ep["id"]][1]), key)) == (
        plain,
        previous,
    )
    assert opened(rows[sealed_alone["id"]][0], key) == sealed_alone["secret"]
    assert (await secret_of(client, ep["id"]))["secret"] == plain
    await publish(client)
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    assert req.headers["webhook-signature"] == standard_signature(plain, req.headers, req.body)


async def test_a_start_that_migrates_seals_rows_stored_in_the_clear(
    settings: Settings, clock: ManualClock, receiver: Receiver
) -> None:
    plain = whsec(b"m")
    async with running(settings, clock) as (container, client):
        ep = await create_endpoint(client, receiver.url())
        await write_in_the_clear(container, ep["id"], plain)
    async with running(settings, clock, auto_migrate=True) as (container, client):
        [(sealed, _)] = (await stored(container)).values()
        assert opened(sealed, key_of(settings)) == plain
        await publish(client)
        await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    assert req.headers["webhook-signature"] == standard_signature(plain, req.headers, req.body)


# -- rotating the key ---------------------------------------------------------------------------


async def test_a_new_key_put_first_opens_old_rows_and_reseals_them_under_itself(
    settings: Settings, clock: ManualClock, receiver: Receiver
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with running(with_key(settings, old), clock) as (_, client):
        plain = await create_endpoint(client, receiver.url())
        rotating = await create_endpoint(client, HOOK)
        r = await client.post(f"/v1/endpoints/{rotating['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        rotated_to = r.json()["secret"]
    both = with_key(settings, f"{new},{old}")
    async with running(both, clock, auto_migrate=False, own_store=False) as (container, client):
        assert (await secret_of(client, plain["id"]))["secret"] == plain["secret"]
        shown = await secret_of(client, rotating["id"])
        assert (shown["secret"], shown["previous_secret"]) == (rotated_to, rotating["secret"])
        before = await stored(container)
        with pytest.raises(InvalidToken):
            opened(before[plain["id"]][0], new)
        assert await seal_secrets(container.store) == 2
        after = await stored(container)
        assert opened(after[plain["id"]][0], new) == plain["secret"]
        assert opened(after[rotating["id"]][0], new) == rotated_to
        assert opened(str(after[rotating["id"]][1]), new) == rotating["secret"]
        assert await seal_secrets(container.store) == 0
    async with running(with_key(settings, new), clock) as (container, client):
        assert (await secret_of(client, plain["id"]))["secret"] == plain["secret"]
        await publish(client)
        await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    expected = standard_signature(plain["secret"], req.headers, req.body)
    assert req.headers["webhook-signature"] == expected
    with pytest.raises(SecretKeyError):
        await build(with_key(settings, old), clock=clock, auto_migrate=True)


# -- the CLI -------------------------------------------------------------------------------


def test_secrets_new_key_prints_a_fresh_fernet_key() -> None:
    runner = CliRunner()
    first = runner.invoke(cli_app, ["secrets", "new-key"])
    second = runner.invoke(cli_app, ["secrets", "new-key"])
    assert first.exit_code == 0, first.output
    key = first.stdout.strip()
    assert len(key) == 44
    token = Fernet(key.encode()).encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"
    assert second.stdout.strip() != key


async def sqlite_with_endpoints(database: Path, *, in_the_clear: int, sealed: int) -> list[str]:
    """A SQLite database (key beside it) with endpoints, some stored in the clear."""
    plain: list[str] = []
    async with running(sqlite_settings(database), ManualClock()) as (container, client):
        for n in range(in_the_clear + sealed):
            ep = await create_endpoint(client, HOOK)
            if n < in_the_clear:
                secret = whsec(bytes([65 + n]))
                await write_in_the_clear(container, ep["id"], secret)
                plain.append(secret)
    return plain


def cli_env(database: Path, key: str | None = None) -> dict[str, str | None]:
    return {
        "CROUPIER_DATABASE_URL": f"sqlite:///{database}",
        "CROUPIER_SECRET_KEY": key,
        "CROUPIER_ADMIN_KEY": None,
    }


async def columns_of(database: Path) -> list[str]:
    # Neither migrating nor owning the store: this look does not seal anything itself.
    options: dict[str, Any] = {"auto_migrate": False, "own_store": False}
    async with running(sqlite_settings(database), ManualClock(), **options) as (c, _):
        return [secret for secret, _ in (await stored(c)).values()]


def test_secrets_reseal_seals_what_is_in_the_clear_and_says_how_many(tmp_path: Path) -> None:
    database = tmp_path / "croupier.db"
    plain = asyncio.run(sqlite_with_endpoints(database, in_the_clear=2, sealed=1))
    result = CliRunner().invoke(cli_app, ["secrets", "reseal"], env=cli_env(database))
    assert result.exit_code == 0, result.output
    columns = asyncio.run(columns_of(database))
    assert all(c.startswith(SEALED) for c in columns)
    assert not any(p in c for p in plain for c in columns)
    assert "2 endpoints had secrets sealed again" in result.stdout


def test_secrets_reseal_with_nothing_to_do_reports_none(tmp_path: Path) -> None:
    database = tmp_path / "croupier.db"
    asyncio.run(sqlite_with_endpoints(database, in_the_clear=0, sealed=2))
    result = CliRunner().invoke(cli_app, ["secrets", "reseal"], env=cli_env(database))
    assert result.exit_code == 0, result.output
    assert "0 endpoints had secrets sealed again" in result.stdout


def test_secrets_reseal_with_a_wrong_key_fails_plainly_and_changes_nothing(
    tmp_path: Path,
) -> None:
    database = tmp_path / "croupier.db"
    asyncio.run(sqlite_with_endpoints(database, in_the_clear=0, sealed=1))
    before = asyncio.run(columns_of(database))
    wrong = Fernet.generate_key().decode()
    result = CliRunner().invoke(cli_app, ["secrets", "reseal"], env=cli_env(database, wrong))
    assert result.exit_code == 1
    assert "CROUPIER_SECRET_KEY" in result.output
    assert "Traceback" not in result.output
    assert asyncio.run(columns_of(database)) == before


def test_migrate_seals_secrets_stored_in_the_clear(tmp_path: Path) -> None:
    database = tmp_path / "croupier.db"
    plain = asyncio.run(sqlite_with_endpoints(database, in_the_clear=1, sealed=0))
    result = CliRunner().invoke(cli_app, ["migrate"], env=cli_env(database))
    assert result.exit_code == 0, result.output
    [column] = asyncio.run(columns_of(database))
    key = (tmp_path / "croupier.db.key").read_text().strip()
    assert opened(column, key) == plain[0]


# -- logs ----------------------------------------------------------------------------------


async def test_no_secret_reaches_the_logs_from_start_to_delivery(
    settings: Settings,
    clock: ManualClock,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    # Every stdlib logger at DEBUG (the SQL croupier runs and its parameters among them),
    # every structlog event, and whatever reaches file descriptors 1 and 2.
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy holds its own loggers at WARNING unless told otherwise.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    secrets: list[str] = []
    with structlog.testing.capture_logs(
        processors=[structlog.processors.format_exc_info]
    ) as events:
        async with running(settings, clock) as (container, client):
            for dialect in ("standard", "ed25519", "hmac-hex", "bearer"):
                ep = await create_endpoint(client, receiver.url(f"/{dialect}"), dialect=dialect)
                rotated = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret")
                assert rotated.status_code == 200, rotated.text
                secrets += [ep["secret"], rotated.json()["secret"]]
            failing = await create_endpoint(client, "http://127.0.0.1:9/closed", retry_schedule=[0])
            secrets.append(failing["secret"])
            await publish(client)
            await container.dispatcher.run_until_idle()
    out, err = capfd.readouterr()
    assert len(receiver.requests) == 4
    logged = "\n".join([caplog.text, repr(events), out, err])
    assert "INSERT INTO endpoints" in caplog.text, "the SQL log was captured"
    assert SEALED in caplog.text, "with its parameters: the sealed secrets"
    if backend == "sqlite":
        assert any("CROUPIER_SECRET_KEY" in str(e.get("event")) for e in events)
    for secret in secrets:
        assert secret not in logged
        if secret.startswith(("whsec_", "whsk_")):
            # nor its key without the prefix
            assert secret.split("_", 1)[1] not in logged
