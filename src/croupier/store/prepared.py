"""Hot bulk statements, compiled once per dialect and run with plain tuples.

SQLAlchemy turns every parameter set of an ``executemany`` into a dictionary, runs each value
through its type's bind processor, and builds the positional list the driver wants. For the
few statements that write a row per delivery (a publish's deliveries, a recorded batch's
attempts and outcomes) that was a sixth of the store's CPU at a few thousand deliveries a
second. :class:`Prepared` does that work once: the statement is written in Core, compiled
for the connection's dialect, and run through the driver with tuples in the right order.

The values must already be what the driver takes (``str``, ``int``, ``float``, ``None``):
no column of these statements needs a bind processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable


class Prepared:
    """A Core statement with positional bind parameters, named by :attr:`names`."""

    def __init__(self, statement: Executable, names: Sequence[str]) -> None:
        self._statement = statement
        self.names = tuple(names)
        self._compiled: dict[str, str] = {}

    def executemany(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Run once per row; each row holds the values of :attr:`names`, in that order."""
        if rows:
            conn.exec_driver_sql(self._sql(conn), list(map(tuple, rows)))

    def _sql(self, conn: Connection) -> str:
        dialect = conn.dialect
        sql = self._compiled.get(dialect.name)
        if sql is None:
            compiled = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            order = compiled.positiontup
            if order is None or tuple(order) != self.names:
                raise ValueError(
                    f"bind parameters {order} of the statement are not in the order {self.names}"
                )
            sql = self._compiled[dialect.name] = str(compiled)
        return sql
