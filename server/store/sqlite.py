"""SQLite (WAL) with group commit: one fsync serves every write that arrived meanwhile.

Why a writer thread: sqlite3 calls block, and an fsync per order would cap a flash sale at a
few hundred orders per second. Writes are queued; the writer thread runs every queued write
inside one transaction (each in its own SAVEPOINT, so one failing write does not undo its
neighbours), commits once with `synchronous=FULL`, and only then resolves the callers'
futures. A caller that got its result knows the write survives `kill -9`. A write is a
transaction body of the one SQL layer (server/store/db.py), run here without awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from server.store.db import Body, Duplicate, Insert, Lock, Many, Next, Q, Row, Step, X, named

T = TypeVar("T")

Job = Callable[[sqlite3.Connection], Any]
_ROW_LOCK: Final = re.compile(r"\s+FOR\s+(UPDATE|SHARE)\s*$", re.IGNORECASE)
_VARIABLES: Final = 32_000  # SQLite binds at most 32,766 values per statement


@dataclass
class _Pending:
    fn: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass
class CommitStats:
    """Counters that show group commit at work (exported as metrics, read by benchmarks)."""

    commits: int = 0
    writes: int = 0
    largest_batch: int = 0


_STOP = object()


class SqliteDatabase:
    """One database file (`Db`): a writer thread with group commit, and a reader connection."""

    dialect: Literal["sqlite"] = "sqlite"
    shared = False  # one process owns the file
    group_commit = True

    def __init__(
        self,
        path: Path | str,
        *,
        max_batch: int = 1024,
        group_commit: bool = True,
    ) -> None:
        self.path = str(path)
        self.max_batch = max_batch if group_commit else 1
        self.stats = CommitStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    async def start(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        self._reader = self._connect()
        self._thread = threading.Thread(
            target=self._run, args=(writer,), name="souk-sqlite-writer", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        """Flush every queued write, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def write(self, body: Callable[[], Body[T]]) -> T:
        """Run the body in the next group transaction; its result once the commit is durable."""
        return await self._submit(functools.partial(run, body))

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer connection in the next group transaction."""
        if self._thread is None:
            raise RuntimeError("database not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(fn, loop, fut))
        return await fut

    async def read(self, body: Callable[[], Body[T]]) -> T:
        """Run a body on the reader connection in a worker thread (WAL: never blocks the
        writer)."""
        return await asyncio.to_thread(self._read, body)

    async def rows(self, sql: str, *args: Any) -> list[Row]:
        def body() -> Body[list[Row]]:
            rows: list[Row] = yield Q(sql, *args)
            return rows

        return await self.read(body)

    def _read(self, body: Callable[[], Body[T]]) -> T:
        if self._reader is None:
            raise RuntimeError("database not started")
        with self._read_lock:
            return run(body, self._reader)

    def _run(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Pending] = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(conn, batch)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        """Run a batch in one transaction. Optimistic first: no per-job SAVEPOINT (each costs
        two statements, and every statement is a GIL hand-off with the event loop). Only if a
        job raises is the batch rolled back and run again with a SAVEPOINT per job, so that the
        failing job fails alone. A job may therefore run twice: jobs must have no effect
        outside the connection."""
        results: list[tuple[_Pending, bool, Any]]
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [(job, True, job.fn(conn)) for job in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            results = (
                self._commit_isolated(conn, batch) if len(batch) > 1 else [(batch[0], False, exc)]
            )
        self.stats.commits += 1
        self.stats.writes += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():  # one wake-up per loop, not one per job
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle_all, settled)

    def _commit_isolated(
        self, conn: sqlite3.Connection, batch: list[_Pending]
    ) -> list[tuple[_Pending, bool, Any]]:
        results: list[tuple[_Pending, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as exc:  # a refused write fails alone, not its neighbours
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((job, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((job, True, value))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nothing of the batch is durable
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            results = [(job, False, exc) for job in batch]
        return results


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        _settle(fut, ok, value)


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def run(body: Callable[[], Body[T]], conn: sqlite3.Connection) -> T:
    """Drive a transaction body on a connection, step by step, without awaiting."""
    gen = body()
    try:
        step = next(gen)
        while True:
            try:
                result = _step(conn, step)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc) and "PRIMARY KEY" not in str(exc):
                    raise
                step = gen.throw(Duplicate(str(exc)))
                continue
            step = gen.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        gen.close()


def _step(conn: sqlite3.Connection, step: Step) -> Any:
    if isinstance(step, X):
        return conn.execute(_sql(step.sql), _args(step.args)).rowcount
    if isinstance(step, Q):
        return conn.execute(_sql(step.sql), _args(step.args)).fetchall()
    if isinstance(step, Many):
        conn.executemany(_sql(step.sql), step.rows)
        return None
    if isinstance(step, Insert):
        width = len(step.columns)
        head = f"INSERT INTO {step.table} ({', '.join(step.columns)}) VALUES "
        one = "(" + ", ".join(["?"] * width) + ")"
        chunk = max(1, min(500, _VARIABLES // width))
        for at in range(0, len(step.rows), chunk):
            part = step.rows[at:at + chunk]
            conn.execute(head + ", ".join([one] * len(part)), [v for r in part for v in r])
        return None
    if isinstance(step, Lock):
        return None  # the writer thread is the only writer: nobody to wait for
    if isinstance(step, Next):
        return conn.execute(
            "INSERT INTO sequences (name, n) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET n = n + 1 RETURNING n", (step.name,)).fetchone()[0]
    raise TypeError(f"not a step: {step!r}")


@functools.lru_cache(maxsize=1024)
def _sql(sql: str) -> str:
    return _ROW_LOCK.sub("", sql)


def _args(args: tuple[Any, ...]) -> Any:
    mapping = named(args)
    return args if mapping is None else mapping
