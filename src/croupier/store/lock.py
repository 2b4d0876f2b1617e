"""One process owns an SQLite file: an advisory lock beside it keeps a second one out."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url


class StoreLocked(RuntimeError):
    pass


class FileOwnership:
    """Holds ``<database>.lock`` with ``flock`` for as long as the process runs."""

    def __init__(self, database_url: str) -> None:
        database = make_url(database_url).database
        self.path = Path(database + ".lock") if database and database != ":memory:" else None
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreLocked(
                f"another croupier process is using {self.path.with_suffix('')}; "
                "SQLite allows one worker: stop it, or move to PostgreSQL to run several"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
