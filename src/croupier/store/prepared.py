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

from sqlalchemy.engine import Connection, CursorResult
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


class Statement:
    """A Core statement compiled once per dialect and run by the driver with named values.

    Building and compiling a statement on every call cost the wallet about 60 us per
    statement, ten times what SQLite takes to run it; this costs a dictionary lookup. As
    with :class:`Prepared`, values must already be what the driver takes. Literals in the
    statement (``status == "authorized"``) keep their value; every named ``bindparam``
    must be given.
    """

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}

    def execute(self, conn: Connection, **values: Any) -> CursorResult[Any]:
        sql, order = self._sql(conn)
        return conn.exec_driver_sql(sql, _positional(order, values))

    def executemany(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            sql, order = self._sql(conn)
            conn.exec_driver_sql(sql, [_positional(order, row) for row in rows])

    def _sql(self, conn: Connection) -> tuple[str, tuple[tuple[str, Any], ...]]:
        dialect = conn.dialect
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            binds = compiled.binds
            order = tuple(
                (name, _GIVEN if binds[name].required else binds[name].value)
                for name in compiled.positiontup
            )
            found = self._compiled[dialect.name] = (str(compiled), order)
        return found


#: The value of a named ``bindparam``: the caller gives it.
_GIVEN: Any = object()


def _positional(order: tuple[tuple[str, Any], ...], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values[name] if literal is _GIVEN else literal for name, literal in order)
