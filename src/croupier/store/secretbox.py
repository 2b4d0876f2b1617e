"""Endpoint secrets at rest: sealed with a key the database never holds.

A sealed value is ``sealed:v1:`` and a Fernet token (AES-128-CBC with an HMAC-SHA256 over
it, from ``cryptography``). The key comes from ``CROUPIER_SECRET_KEY``: one or more
Fernet keys separated by commas, the first one sealing and every one opening, so that the
key itself can be rotated (put the new key first, run ``croupier secrets reseal``, then
drop the old one). On SQLite without that setting, a key is generated once and kept in a
file beside the database (``<database>.key``, readable by its owner only), with a warning:
whoever copies the database alone gets no secret out of it. On PostgreSQL the setting is
required, as there is no file to keep it beside.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url

log = structlog.get_logger("croupier.store")

SEALED: Final = "sealed:v1:"


class SecretKeyError(RuntimeError):
    """The key is missing, malformed, or not the one the stored secrets were sealed with."""


class SecretBox:
    """Seals and opens endpoint secrets."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError("CROUPIER_SECRET_KEY names no key")
        try:
            self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                "CROUPIER_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes each), "
                "separated by commas; `croupier secrets new-key` prints one"
            ) from exc
        self._first = Fernet(keys[0].strip().encode())

    @classmethod
    def parse(cls, text: str) -> SecretBox:
        return cls([part for part in text.split(",") if part.strip()])

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, secret: str) -> str:
        return SEALED + self._first.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret in ``stored``. A value written before secrets were sealed is returned
        as it is, until :meth:`needs_sealing` has it sealed."""
        if not stored.startswith(SEALED):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED).encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError(
                "an endpoint secret cannot be opened with CROUPIER_SECRET_KEY: the key is not "
                "the one it was sealed with (keep the old key after the new one until "
                "`croupier secrets reseal` has run)"
            ) from exc

    def needs_sealing(self, stored: str) -> bool:
        """True for a value in the clear, or sealed with another key than the first."""
        if not stored.startswith(SEALED):
            return True
        token = stored.removeprefix(SEALED).encode()
        try:
            self._first.decrypt(token)
        except InvalidToken:
            return True
        return False


def load_secret_box(setting: str | None, database_url: str, *, sqlite: bool) -> SecretBox:
    """The box for ``CROUPIER_SECRET_KEY``, or, on SQLite, for the key kept beside the file."""
    if setting:
        return SecretBox.parse(setting)
    if not sqlite:
        raise SecretKeyError(
            "CROUPIER_SECRET_KEY is required with PostgreSQL: endpoint secrets are encrypted "
            "at rest with it. `croupier secrets new-key` prints a new one; keep it safe, "
            "apart from the database"
        )
    path = key_file_for(database_url)
    if path is None:
        log.warning(
            "no CROUPIER_SECRET_KEY: endpoint secrets of this in-memory database are sealed "
            "with a key that lives as long as the process"
        )
        return SecretBox([SecretBox.new_key()])
    if path.exists():
        return SecretBox.parse(path.read_text())
    key = SecretBox.new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    log.warning(
        "no CROUPIER_SECRET_KEY: generated one to encrypt endpoint secrets and kept it beside "
        "the database; back it up apart from the database, or set CROUPIER_SECRET_KEY",
        key_file=str(path),
    )
    return SecretBox([key])


def key_file_for(database_url: str) -> Path | None:
    """``<database file>.key`` for a SQLite URL; None for an in-memory database."""
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database + ".key")
