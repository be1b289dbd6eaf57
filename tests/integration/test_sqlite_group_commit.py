"""SqliteDatabase group commit on a real file: a failing write fails alone, its neighbours in
the same transaction commit, and results come back to each caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from server.store.db import Body, Duplicate, Q, X
from server.store.sqlite import SqliteDatabase


async def test_failing_job_fails_alone_and_neighbours_commit(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    await db.start()
    try:

        def create() -> Body[None]:
            yield X("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")

        await db.write(create)

        def put(k: int) -> Callable[[], Body[int]]:
            def body() -> Body[int]:
                yield X("INSERT INTO t VALUES (?, ?)", k, f"v{k}")
                return k

            return body

        def bad() -> Body[None]:
            yield X("INSERT INTO t VALUES (1000, 'x')")
            yield X("INSERT INTO t VALUES (1000, 'dup')")  # fails after a partial effect

        calls: list[Awaitable[object]] = [db.write(put(k)) for k in range(200)]
        calls.insert(100, db.write(bad))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[100], Duplicate)
        assert [r for i, r in enumerate(results) if i != 100] == list(range(200))
        assert db.stats.commits < 200  # grouped

        def keys() -> Body[list[int]]:
            return [r[0] for r in (yield Q("SELECT k FROM t ORDER BY k"))]

        assert await db.read(keys) == list(range(200))  # nothing of the failed job remains
    finally:
        await db.close()


async def test_write_before_start_is_refused(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")

    def nothing() -> Body[None]:
        yield X("SELECT 1")

    with pytest.raises(RuntimeError):
        await db.write(nothing)
