"""SqliteDatabase group commit on a real file: a failing write fails alone, its neighbours in
the same transaction commit, and results come back to each caller."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from server.store.sqlite import SqliteDatabase


async def test_failing_job_fails_alone_and_neighbours_commit(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    db.add_schema("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    db.start()
    try:

        def put(k: int) -> Callable[[sqlite3.Connection], int]:
            def run(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (?, ?)", (k, f"v{k}"))
                return k

            return run

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1000, 'x')")
            conn.execute("INSERT INTO t VALUES (1000, 'dup')")  # fails after a partial effect

        calls: list[Awaitable[object]] = [db.write(put(k)) for k in range(200)]
        calls.insert(100, db.write(bad))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[100], sqlite3.IntegrityError)
        assert [r for i, r in enumerate(results) if i != 100] == list(range(200))
        assert db.stats.commits < 200  # grouped
        rows = await db.read(lambda c: c.execute("SELECT k FROM t ORDER BY k").fetchall())
        assert [r[0] for r in rows] == list(range(200))  # nothing of the failed job remains
    finally:
        await db.close()


async def test_write_before_start_is_refused(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    with pytest.raises(RuntimeError):
        await db.write(lambda c: None)
