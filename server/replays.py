"""Replays (回放): the lives of a room recorded by the media relay, with product chapters.

Why a feature of its own: recording is the relay's (``media.recorder``: packets to a file, no
decoding), but when a room records (``room_create {record: true}`` or ``--record``), from
which moment to which (``live`` to ``ended``), what a chapter is (a pin, a sale start) and who
may see or delete a replay are the server's rules. Rows are in the replays store; the files in
``<data dir>/replays/``.

A recording runs on the node whose relay holds the publisher (the origin in a cluster): the
``live`` state and a ``publish`` on that node both start it (whichever comes second finds the
other done), ``ended`` stops it. A recording that fails (a full disk, a disk too slow) is
announced as ``recording_failed`` on ``staff:<room>``; the live goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import staff_channel
from server.domain.replay import (
    MAX_CHAPTERS,
    Chapter,
    chapter,
    expired,
    listing,
    recording_id,
)
from server.store.replays import ReplayStore

if TYPE_CHECKING:
    from media.recorder import Recorder
    from media.relay import MediaRelay

log = logging.getLogger("souk.replays")

Publish = Callable[..., object]
EXTENSION = ".webm"


class Replays:
    """The node's recordings and the replays' rows."""

    def __init__(self, store: ReplayStore, publish: Publish, clock_ms: Callable[[], int],
                 directory: Path, *, record_all: bool = False,
                 retention_days: float = 0.0) -> None:
        self.store = store
        self.publish = publish
        self.clock_ms = clock_ms
        self.directory = directory
        self.record_all = record_all
        self.retention_days = retention_days
        self.recorder: Recorder | None = None
        self.relay: MediaRelay | None = None
        self._active: dict[str, str] = {}  # room -> recording id, on this node
        self._chapters: dict[str, int] = {}  # recording id -> chapters written
        self._sales: dict[str, set[str]] = {}  # recording id -> other nodes' sales chaptered
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, relay: MediaRelay) -> None:
        """Record from ``relay``'s ingest (the process holding the publishers)."""
        from media.recorder import Recorder

        self.relay = relay
        self.recorder = Recorder(self.directory, on_failed=self._failed)
        relay.ingest.listen(self.recorder)

    async def start(self) -> None:
        """Recordings a killed process left open: their files hold what was flushed."""
        for row in await self.store.unfinished():
            path = self.directory / row["file"]
            if not path.exists() and path.with_suffix(".mp4").exists():  # an H.264 stream
                path = path.with_suffix(".mp4")
            duration = await asyncio.get_running_loop().run_in_executor(
                None, _probe_duration_ms, path)
            await self.store.finish(row["id"], self.clock_ms(), duration, _size(path), "cut",
                                    "the server stopped while recording", path.name)

    async def stop(self) -> None:
        for room in list(self._active):
            await self.ended(room)
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # ---- when to record ----------------------------------------------------------------
    async def set_record(self, room: str, record: bool) -> None:
        await self.store.set_record(room, record)

    async def wants(self, room: str) -> bool:
        flag = await self.store.records(room)
        return self.record_all if flag is None else flag

    async def live(self, room: str) -> str | None:
        """The room is live: start recording it here if it records and its publisher is on
        this node's relay; returns the recording's id."""
        recorder = self.recorder
        if recorder is None or self.relay is None or not self.relay.publishing(room):
            return None
        async with self._lock:
            if room in self._active or not await self.wants(room):
                return self._active.get(room)
            now = self.clock_ms()
            rid = recording_id(room, now)
            n = 0
            while await self.store.replay(rid) is not None:
                n += 1
                rid = recording_id(room, now, n)
            await self.store.begin(rid, room, rid + EXTENSION, now)
            try:
                recorder.start(room, rid, now)
            except Exception as exc:  # the directory cannot be made, the thread cannot start
                await self.store.finish(rid, self.clock_ms(), 0, 0, "failed", str(exc))
                raise
            self._active[room] = rid
            return rid

    async def ended(self, room: str) -> None:
        """The live ended: the file is closed and its row says how long and large it is."""
        rid = self._active.pop(room, None)
        if rid is None or self.recorder is None:
            return
        self._sales.pop(rid, None)
        info = await self.recorder.stop(room)
        if info is None:
            return
        status = "failed" if info.failed else "done"
        await self.store.finish(rid, self.clock_ms(), int(info.duration_s * 1000), info.size,
                                status, info.failed, info.path.name)
        self._chapters.pop(rid, None)

    async def mark(self, room: str, kind: str, product: dict[str, Any]) -> Chapter | None:
        """A chapter at this moment of ``room``'s recording (none if it is not recording)."""
        rid = self._active.get(room)
        recorder = self.recorder
        elapsed = recorder.elapsed_s(room) if recorder is not None else None
        if rid is None or elapsed is None:
            return None
        if self._chapters.get(rid, 0) >= MAX_CHAPTERS:
            return None
        c = chapter(kind, product, elapsed)
        self._chapters[rid] = self._chapters.get(rid, 0) + 1
        await self.store.add_chapter(rid, c)
        return c

    def on_remote(self, ch: str, event: dict[str, Any]) -> None:
        """In a cluster: the room went live or ended on another node (the streamer's studio
        may be connected there, the publisher here)."""
        if not ch.startswith("room:"):
            return
        room = ch[5:]
        product = event.get("product")
        if event.get("type") == "pinned" and isinstance(product, dict) and room in self._active:
            self._spawn(self.mark(room, "pin", product))  # pinned from a studio on another node
            return
        if event.get("type") == "sale" and event.get("phase") == "live" and room in self._active:
            # a sale started on another node: its card carries the product's title and image
            sale, rid = event.get("id"), self._active[room]
            if isinstance(sale, str) and isinstance(product, str) and sale not in self._sales.setdefault(rid, set()):
                self._sales[rid].add(sale)  # once, though a sale is told again as it changes
                card = {"id": product, "title": event.get("title"), "image": event.get("image")}
                self._spawn(self.mark(room, "sale", card))
            return
        if event.get("type") != "state":
            return
        state = event.get("state")
        if state == "live" and self.relay is not None and self.relay.publishing(room):
            self._spawn(self._live_quietly(room))
        elif state == "ended" and room in self._active:
            self._spawn(self.ended(room))

    async def _live_quietly(self, room: str) -> None:
        try:
            await self.live(room)
        except Exception as exc:
            log.exception("starting a recording failed", extra={"room": room})
            self.publish(staff_channel(room), "recording_failed",
                         {"room": room, "replay": None, "reason": f"could not start: {exc}"})

    def _spawn(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("replays: a background step failed")

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, room: str, reason: str) -> None:
        rid = self._active.get(room)
        log.warning("recording failed", extra={"room": room, "reason": reason})
        self.publish(staff_channel(room), "recording_failed",
                     {"room": room, "replay": rid, "reason": reason})
        self._spawn(self.ended(room))

    # ---- reading, deleting ---------------------------------------------------------------
    async def replays(self, room: str) -> list[dict[str, Any]]:
        rows = [r for r in await self.store.replays(room) if r["status"] != "recording"]
        chapters = await self.store.chapters([r["id"] for r in rows])
        return [listing(r, chapters[r["id"]], f"/api/replays/{r['id']}/file") for r in rows]

    async def replay(self, rid: str) -> dict[str, Any] | None:
        return await self.store.replay(rid)

    def path(self, row: dict[str, Any]) -> Path:
        return self.directory / str(row["file"])

    async def delete(self, rid: str) -> bool:
        row = await self.store.replay(rid)
        if row is None or row["status"] == "recording":
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(row))
        await self.store.delete(rid)
        return True

    async def expire(self) -> int:
        """Delete the replays older than the retention (the periodic sweep)."""
        if self.retention_days <= 0:
            return 0
        now = self.clock_ms()
        horizon = now - int(self.retention_days * 86_400_000)
        rows = await self.store.older_than(horizon)
        done = 0
        for rid in expired([(r["id"], r["started_at"]) for r in rows], now, self.retention_days):
            done += await self.delete(rid)
        return done


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _probe_duration_ms(path: Path) -> int:
    """The last packet's time in a file cut short (no cues, no duration): demuxed, not
    decoded."""
    try:
        import av

        last = 0.0
        with av.open(str(path)) as c:
            for packet in c.demux():
                if packet.pts is not None and packet.time_base is not None:
                    last = max(last, float(packet.pts * packet.time_base))
        return int(last * 1000)
    except Exception:
        return 0
