"""Apply the Alembic migrations that ship inside the package."""

from __future__ import annotations

from functools import partial
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from croupier.store.engine import Database


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the database to ``revision``, in one transaction."""
    await db.run(partial(_upgrade, revision=revision))


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(files("croupier") / "migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def pending_migrations(db: Database) -> bool:
    """True when the database is behind the newest migration this package ships."""
    return await db.run(_behind, write=False)


def _behind(connection: Connection) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(files("croupier") / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    current = MigrationContext.configure(connection).get_current_revision()
    return current != head
