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

from collections import namedtuple
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError
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
    """A Core statement compiled once per dialect and run on the driver's own cursor.

    Building and compiling a statement on every call cost the wallet about 60 us per
    statement, ten times what SQLite takes to run it, and SQLAlchemy's result objects
    another 20; this costs a dictionary lookup and a named tuple per row. As with
    :class:`Prepared`, values must already be what the driver takes, and rows come back as
    the driver gives them. Literals in the statement (``status == "authorized"``) keep
    their value; every named ``bindparam`` must be given. A driver error is raised as
    SQLAlchemy raises it (an ``IntegrityError`` for a taken key), so callers see one kind.
    """

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self._row_types: dict[str, Any] = {}

    def execute(self, conn: Connection, **values: Any) -> Rows:
        sql, order = self._sql(conn)
        params = _positional(order, values)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            rows: list[Any] = []
            if cursor.description is not None:
                row_type = self._row_type(conn.dialect.name, cursor.description)
                rows = [row_type._make(r) for r in cursor.fetchall()]
            return Rows(rows, cursor.rowcount)
        except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
            raise _driver_error(conn, cursor, sql, params, exc) from exc
        finally:
            cursor.close()

    def executemany(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        sql, order = self._sql(conn)
        params = [_positional(order, row) for row in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, params)
        except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
            raise _driver_error(conn, cursor, sql, params, exc) from exc
        finally:
            cursor.close()

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

    def _row_type(self, dialect: str, description: Sequence[Sequence[Any]]) -> Any:
        row_type = self._row_types.get(dialect)
        if row_type is None:
            names = [str(column[0]) for column in description]
            row_type = self._row_types[dialect] = namedtuple("Row", names, rename=True)
        return row_type


class Rows:
    """What :meth:`Statement.execute` returns: its rows (named tuples) and row count."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def first(self) -> Any | None:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise ValueError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


def savepoint(conn: Connection, name: str) -> None:
    """``SAVEPOINT name`` on the driver's cursor (SQLAlchemy compiles one per call)."""
    _raw(conn, f"SAVEPOINT {name}")


def release(conn: Connection, name: str) -> None:
    _raw(conn, f"RELEASE SAVEPOINT {name}")


def rollback_to(conn: Connection, name: str) -> None:
    _raw(conn, f"ROLLBACK TO SAVEPOINT {name}")


def _raw(conn: Connection, sql: str) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
        raise _driver_error(conn, cursor, sql, (), exc) from exc
    finally:
        cursor.close()


def _driver_error(
    conn: Connection, cursor: Any, sql: str, params: Any, exc: Exception
) -> StatementError:
    """The driver's error as SQLAlchemy raises it; a lost connection is invalidated, as
    SQLAlchemy does for its own statements, so the pool never lends it again."""
    lost = conn.dialect.is_disconnect(
        exc,  # type: ignore[arg-type]
        conn.connection.dbapi_connection,
        cursor,
    )
    if lost:
        conn.invalidate(exc)
    return DBAPIError.instance(
        sql,
        params,
        exc,
        conn.dialect.dbapi.Error,  # type: ignore[union-attr]
        connection_invalidated=lost,
    )


#: The value of a named ``bindparam``: the caller gives it.
_GIVEN: Any = object()


def _positional(order: tuple[tuple[str, Any], ...], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values[name] if literal is _GIVEN else literal for name, literal in order)
