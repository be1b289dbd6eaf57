"""The one SQL layer: a transaction written once, run by SQLite or by PostgreSQL.

Why generators: SQLite's writer is a thread that runs every queued write of a loop iteration in
one transaction and one fsync (server/store/sqlite.py), so a write must run there without
awaiting; PostgreSQL (asyncpg) is awaited statement by statement. A store therefore writes a
transaction as a generator that yields steps (`Q`, `X`, ...) and receives each one's result;
each database drives it its own way. The store's SQL, and its guards (`ON CONFLICT`,
`UPDATE ... WHERE ... RETURNING`, which both databases run), exist once.

The statements are written with `?` placeholders (`$n` for PostgreSQL is derived once per
statement) or `:name` ones with one mapping argument. `FOR UPDATE` / `FOR SHARE` lock rows in
PostgreSQL and are dropped for SQLite, whose single writer already excludes everyone else, as
`Lock` (PostgreSQL's transaction-scoped advisory lock) does nothing there.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Row = Any  # sqlite3.Row or asyncpg.Record: both read by column name and by position
Dialect = Literal["sqlite", "postgres"]


class Step:
    __slots__ = ()


class Q(Step):
    """A SELECT, or a write with RETURNING: its rows."""

    __slots__ = ("args", "sql")

    def __init__(self, sql: str, *args: Any) -> None:
        self.sql, self.args = sql, args


class X(Q):
    """A write: how many rows it changed."""

    __slots__ = ()


class Many(Step):
    """One statement for each tuple of arguments (nothing is returned)."""

    __slots__ = ("rows", "sql")

    def __init__(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.sql, self.rows = sql, rows


class Insert(Step):
    """Many rows into one table: multi-row VALUES on SQLite (one statement per 500 rows:
    a statement is a GIL hand-off with the loop), prepared once and pipelined on PostgreSQL,
    or its COPY (`copy`) where no constraint can refuse a row."""

    __slots__ = ("columns", "copy", "rows", "table")

    def __init__(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 copy: bool = False) -> None:
        self.table, self.columns, self.rows, self.copy = table, columns, rows, copy


class Lock(Step):
    """Serialise transactions that name the same key, until the end of this one."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class Next(Step):
    """The next number of a named sequence."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


Body = Generator[Step, Any, T]


class Duplicate(Exception):
    """A unique constraint refused a row. Thrown into the body at the step that failed; a
    body that catches it must run no further step (PostgreSQL has aborted the transaction)."""


class Db(Protocol):
    """A started database. `write` returns once the transaction is durable."""

    @property
    def dialect(self) -> Dialect: ...

    # other processes write this database too (the nodes of a cluster): what one node holds
    # in memory may be behind the record
    shared: bool
    # the writes queued meanwhile already go in one transaction (SQLite's writer thread);
    # else a store whose writes contend on one row groups them itself
    group_commit: bool

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def write(self, body: Callable[[], Body[T]]) -> T:
        """Run the body in one transaction (SQLite may run it twice: no effect outside it)."""

    async def read(self, body: Callable[[], Body[T]]) -> T: ...
    async def rows(self, sql: str, *args: Any) -> list[Row]: ...


def named(args: tuple[Any, ...]) -> Mapping[str, Any] | None:
    """The mapping of a `:name` statement, or None for `?` arguments."""
    return args[0] if len(args) == 1 and isinstance(args[0], Mapping) else None


def in_list(n: int) -> str:
    """`(?, ?, ...)` for n values (at least one, so that the SQL stays valid)."""
    return "(" + ", ".join(["?"] * max(1, n)) + ")"


def steps(*fixed: Step) -> Callable[[], Body[Any]]:
    """A transaction of fixed steps, no logic between them; its result is the last step's."""

    def body() -> Body[Any]:
        result = None
        for step in fixed:
            result = yield step
        return result

    return body
