"""SQLite (WAL) with group commit: one fsync serves every write that arrived meanwhile.

Why a writer thread: sqlite3 calls block, and an fsync per order would cap a flash sale at a
few hundred orders per second. Writes are queued as callables; the writer thread runs every
queued callable inside one transaction (each in its own SAVEPOINT, so one failing write does
not undo its neighbours), commits once with `synchronous=FULL`, and only then resolves the
callers' futures. A caller that got its result knows the write survives `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Job = Callable[[sqlite3.Connection], Any]


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
    """One database file: a writer thread with group commit, and a reader connection."""

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
        self._schemas: list[str] = []

    def add_schema(self, sql: str) -> None:
        """Register DDL (idempotent `CREATE ... IF NOT EXISTS`) to run before the first write."""
        self._schemas.append(sql)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        for sql in self._schemas:
            writer.executescript(sql)
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

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group transaction; return its result once the commit is durable."""
        if self._thread is None:
            raise RuntimeError("database not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(fn, loop, fut))
        return await fut

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the reader connection in a worker thread (WAL: never blocks the writer)."""
        return await asyncio.to_thread(self.read_sync, fn)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking read, for start-up recovery before the loop serves clients."""
        if self._reader is None:
            raise RuntimeError("database not started")
        with self._read_lock:
            return fn(self._reader)

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
