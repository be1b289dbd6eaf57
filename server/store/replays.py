"""Replays' rows: one per recording (its file, times, size, state), its chapters, and the
rooms whose lives are recorded.

Why stored: a replay outlives the live and the process that recorded it; its chapters are
written as they happen (a pin, a sale start), so a recording cut short by ``kill -9`` keeps
the chapters of what it holds.
"""

from __future__ import annotations

from typing import Any, Protocol

from server.domain.replay import Chapter
from server.store.db import Db, X, steps

_ROW = "SELECT id, room, file, started_at, ended_at, duration_ms, size, status, reason FROM replays"


class ReplayStore(Protocol):
    async def set_record(self, room: str, record: bool) -> None: ...
    async def records(self, room: str) -> bool | None: ...
    async def begin(self, rid: str, room: str, file: str, started_at: int) -> None: ...
    async def finish(self, rid: str, ended_at: int, duration_ms: int, size: int, status: str,
                     reason: str | None, file: str | None = None) -> None: ...
    async def add_chapter(self, rid: str, c: Chapter) -> None: ...
    async def replays(self, room: str) -> list[dict[str, Any]]: ...
    async def replay(self, rid: str) -> dict[str, Any] | None: ...
    async def chapters(self, rids: list[str]) -> dict[str, list[Chapter]]: ...
    async def unfinished(self) -> list[dict[str, Any]]: ...
    async def older_than(self, ts: int) -> list[dict[str, Any]]: ...
    async def delete(self, rid: str) -> None: ...


class SqlReplayStore:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def set_record(self, room: str, record: bool) -> None:
        await self.db.write(steps(X(
            "INSERT INTO replay_rooms (room, record) VALUES (?, ?)"
            " ON CONFLICT (room) DO UPDATE SET record = excluded.record", room, int(record))))

    async def records(self, room: str) -> bool | None:
        rows = await self.db.rows("SELECT record FROM replay_rooms WHERE room = ?", room)
        return bool(rows[0]["record"]) if rows else None

    async def begin(self, rid: str, room: str, file: str, started_at: int) -> None:
        await self.db.write(steps(X(
            "INSERT INTO replays (id, room, file, started_at, status) VALUES (?, ?, ?, ?, ?)",
            rid, room, file, started_at, "recording")))

    async def finish(self, rid: str, ended_at: int, duration_ms: int, size: int, status: str,
                     reason: str | None, file: str | None = None) -> None:
        """The recording's end; ``file``: its name if not the one it began with (an H.264
        stream is written to ``.mp4``)."""
        await self.db.write(steps(X(
            "UPDATE replays SET ended_at = ?, duration_ms = ?, size = ?, status = ?, reason = ?,"
            " file = COALESCE(?, file) WHERE id = ?",
            ended_at, duration_ms, size, status, reason, file, rid)))

    async def add_chapter(self, rid: str, c: Chapter) -> None:
        await self.db.write(steps(X(
            "INSERT INTO replay_chapters (replay, at_ms, kind, product, title, image)"
            " VALUES (?, ?, ?, ?, ?, ?)", rid, c.at_ms, c.kind, c.product, c.title, c.image)))

    async def replays(self, room: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.rows(
            _ROW + " WHERE room = ? ORDER BY started_at DESC", room)]

    async def replay(self, rid: str) -> dict[str, Any] | None:
        rows = await self.db.rows(_ROW + " WHERE id = ?", rid)
        return dict(rows[0]) if rows else None

    async def chapters(self, rids: list[str]) -> dict[str, list[Chapter]]:
        out: dict[str, list[Chapter]] = {rid: [] for rid in rids}
        for rid in rids:
            for r in await self.db.rows(
                    "SELECT at_ms, kind, product, title, image FROM replay_chapters"
                    " WHERE replay = ? ORDER BY at_ms", rid):
                out[rid].append(Chapter(int(r["at_ms"]), r["kind"], r["product"], r["title"],
                                        r["image"]))
        return out

    async def unfinished(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.rows(_ROW + " WHERE status = 'recording'")]

    async def older_than(self, ts: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.rows(_ROW + " WHERE started_at < ?", ts)]

    async def delete(self, rid: str) -> None:
        await self.db.write(steps(
            X("DELETE FROM replay_chapters WHERE replay = ?", rid),
            X("DELETE FROM replays WHERE id = ?", rid)))
