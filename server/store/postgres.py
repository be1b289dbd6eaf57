"""PostgreSQL (`--postgres`): the one database every node of a cluster shares.

Why a pool and no group commit of its own: PostgreSQL takes concurrent transactions, and the
writes that contend on one row (a flash sale's stock) are grouped by their store instead
(server/store/ledger.py). A transaction body (server/store/db.py) is awaited step by step on
one pooled connection; the store's `?` and `:name` placeholders become `$n` once per
statement, and asyncpg prepares each statement once per connection.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

import asyncpg

from server.store.db import Body, Duplicate, Insert, Lock, Many, Next, Q, Row, Step, X, named

T = TypeVar("T")
_PLACEHOLDER: Final = re.compile(r"\?(\d*)")
_NAME: Final = re.compile(r"(?<![:\w]):([a-z_]+)")


class PgDatabase:
    """A `Db` over an asyncpg pool, opened from a DSN by `start` (or given, already open)."""

    dialect: Literal["postgres"] = "postgres"
    shared = True  # every node of the cluster writes it
    group_commit = False  # concurrent transactions, each its own commit

    def __init__(self, dsn: str | asyncpg.Pool, *, pool_size: int = 10) -> None:
        self._dsn = dsn if isinstance(dsn, str) else None
        self.pool: asyncpg.Pool | None = dsn if isinstance(dsn, asyncpg.Pool) else None
        self.pool_size = pool_size

    async def start(self) -> None:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self.pool_size)

    async def close(self) -> None:
        """Close the pool if this database opened it."""
        if self._dsn is not None and self.pool is not None:
            await self.pool.close()
            self.pool = None

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("database not started")
        return self.pool

    async def write(self, body: Callable[[], Body[T]]) -> T:
        async with self._pool().acquire() as conn, conn.transaction():
            return await run(body, conn)

    async def read(self, body: Callable[[], Body[T]]) -> T:
        """A consistent view: every step of the body reads the same snapshot."""
        async with self._pool().acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            return await run(body, conn)

    async def rows(self, sql: str, *args: Any) -> list[Row]:
        query, values = statement(sql, args)
        return list(await self._pool().fetch(query, *values))


async def run(body: Callable[[], Body[T]], conn: asyncpg.Connection) -> T:
    """Drive a transaction body on a connection, awaiting each step."""
    gen = body()
    try:
        step = next(gen)
        while True:
            try:
                result = await _step(conn, step)
            except asyncpg.UniqueViolationError as exc:
                step = gen.throw(Duplicate(str(exc)))
                continue
            step = gen.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        gen.close()


async def _step(conn: asyncpg.Connection, step: Step) -> Any:
    if isinstance(step, X):
        query, values = statement(step.sql, step.args)
        return rowcount(await conn.execute(query, *values))
    if isinstance(step, Q):
        query, values = statement(step.sql, step.args)
        return await conn.fetch(query, *values)
    if isinstance(step, Many):
        if step.rows:
            await conn.executemany(_positional(step.sql), step.rows)
        return None
    if isinstance(step, Insert):
        if not step.rows:
            return None
        if step.copy:
            await conn.copy_records_to_table(step.table, records=step.rows,
                                             columns=list(step.columns))
            return None
        marks = ", ".join(f"${i}" for i in range(1, len(step.columns) + 1))
        await conn.executemany(
            f"INSERT INTO {step.table} ({', '.join(step.columns)}) VALUES ({marks})", step.rows)
        return None
    if isinstance(step, Lock):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", step.key)
        return None
    if isinstance(step, Next):
        return await conn.fetchval("SELECT nextval($1::text::regclass)", step.name)
    raise TypeError(f"not a step: {step!r}")


def rowcount(status: str) -> int:
    """Rows a command changed, from its status ("UPDATE 3", "INSERT 0 1")."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


def statement(sql: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The statement in PostgreSQL's `$n` form, and its arguments in that order."""
    mapping = named(args)
    if mapping is None:
        return _positional(sql), args
    query, order = _named(sql)
    return query, tuple(mapping[n] for n in order)


@functools.lru_cache(maxsize=1024)
def _positional(sql: str) -> str:
    count = 0

    def number(m: re.Match[str]) -> str:
        nonlocal count
        if m.group(1):
            return "$" + m.group(1)
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


@functools.lru_cache(maxsize=256)
def _named(sql: str) -> tuple[str, tuple[str, ...]]:
    order: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${order.index(m.group(1)) + 1}"

    return _NAME.sub(number, sql), tuple(order)
