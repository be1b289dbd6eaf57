"""The asyncio side of rooms and groups: holds the Room state machines, their record, and
runs their timers.

Likes and viewer counts are the two things that must never become one broadcast per tap or
per join: they are marked dirty here and published by one periodic task, at most every
`likes_interval_s` and `viewers_interval_s`.

A room's record (its row and its bans and mutes, server/store/rooms.py) is loaded into its Room
before a join passes: alone, every row at start-up and a channel's sanctions once (the process
sees every later change itself); in a cluster, whenever this node does not currently receive
the channel's events. While it does, other nodes' events keep the Room current
(server/cluster/replica.py); when it stops (the bus unsubscribes after the last viewer left) the next
join loads again, so a room set up or a viewer banned on another node is known here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from client_sdk.protocol import group_channel, room_channel
from server.bus.base import Publish
from server.chatlog import ChatLog
from server.domain.room import Actor, Room
from server.periodic import every
from server.store.chat import ChatStore
from server.store.rooms import RoomStore, SanctionStore

log = logging.getLogger("souk.rooms")


class Rooms:
    def __init__(
        self,
        publish: Publish,
        *,
        store: RoomStore,
        sanctions: SanctionStore,
        clock_ms: Callable[[], int],
        receiving: Callable[[str], bool] | None = None,
        likes_interval_s: float = 0.5,
        viewers_interval_s: float = 1.0,
        on_create: Callable[[Room], None] | None = None,
        chat: ChatStore | None = None,
    ) -> None:
        """`receiving(ch)`: in a cluster, whether this node currently gets the channel's
        events (then its Room is current); None: one process sees everything."""
        self.publish = publish
        self.store = store
        self.sanctions = sanctions
        self.clock_ms = clock_ms
        self.receiving = receiving
        self._loaded: set[str] = set()
        self.loads = 0  # how many times a channel's record was read before a join
        self.likes_interval_s = likes_interval_s
        self.viewers_interval_s = viewers_interval_s
        self.by_channel: dict[str, Room] = {}
        self.dirty_likes: set[str] = set()
        self.dirty_viewers: set[str] = set()
        self.on_create = on_create
        # False in a cluster: server/cluster/presence.py publishes the counts summed over every node
        self.count_viewers = True
        self.count_likes = True
        self._tasks: list[asyncio.Task[None]] = []
        # room chat and like totals on disk (None: kept in memory only, as in unit setups)
        self.chat_store = chat
        self.chat_log = ChatLog(chat) if chat is not None else None
        self._likes_writing: asyncio.Task[None] | None = None
        self._likes_unsaved: set[str] = set()
        # the media relay's viewers per room (set once it runs): `video_viewers` in `viewers`
        self.video_counts: Callable[[], dict[str, int]] | None = None
        self._video_rooms: set[str] = set()

    def room(self, room_id: str) -> Room:
        return self._get(room_channel(room_id), room_id, "room")

    def group(self, group_id: str) -> Room:
        return self._get(group_channel(group_id), group_id, "group")

    def get(self, ch: str) -> Room | None:
        return self.by_channel.get(ch)

    def _get(self, ch: str, ident: str, kind: str) -> Room:
        room = self.by_channel.get(ch)
        if room is None:
            room = self.by_channel[ch] = Room(ident, kind=kind)
            if self.on_create is not None:
                self.on_create(room)
        return room

    def forget(self, ch: str) -> None:
        """Drop a room from this process (server/collector.py decided nobody needs it)."""
        self.by_channel.pop(ch, None)
        self._loaded.discard(ch)
        self.dirty_likes.discard(ch)
        self.dirty_viewers.discard(ch)

    async def load(self) -> None:
        """Every stored room into memory (at start-up)."""
        for record in await self.store.rooms():
            record.apply(self.room(record.id))

    async def refresh_staff(self, ch: str, room: Room) -> None:
        """Before a sanction in a cluster: staff who joined on another node while this one
        kept receiving the channel (so never reloaded its record) are known too."""
        if self.store.shared:
            room.staff.update(await self.sanctions.staff(ch))

    async def staff_seen(self, room: Room, actor: Actor) -> None:
        """Remember a staff member's role in this room or group, durably the first time."""
        if room.saw_staff(actor):
            await self.sanctions.save_staff(room_channel(room.id) if room.kind == "room"
                                            else group_channel(room.id), actor.id, actor.role,
                                            self.clock_ms())

    async def save(self, room: Room) -> None:
        """Make the room's row durable (title, shop, state, pinned product)."""
        await self.store.save(room)

    async def ensure(self, ch: str) -> None:
        """Make the Room of `ch` current with its record before a join passes."""
        kind, _, key = ch.partition(":")
        if kind not in ("room", "group"):
            return
        if ch in self._loaded and (self.receiving is None or self.receiving(ch)):
            return
        record = await self.store.room(key) if kind == "room" and self.store.shared else None
        sanctions = await self.sanctions.load(ch, self.clock_ms())
        staff = await self.sanctions.staff(ch)
        kept: tuple[list[dict[str, Any]], int] | None = None
        if kind == "room" and self.chat_store is not None and ch not in self._loaded:
            kept = (await self.chat_store.recent(ch, Room(key).history_limit),
                    # alone, the total is this store's; in a cluster it is Redis's (presence)
                    await self.chat_store.likes(ch) if self.count_likes else 0)
        self.loads += 1
        room = self.room(key) if kind == "room" else self.group(key)
        if record is not None:
            record.apply(room)
        room.staff.update(staff)
        if self.store.shared:  # the record is every node's: liftings made elsewhere count
            room.banned.clear()
            room.muted_until.clear()
        if kept is not None and ch not in self._loaded:  # once, if two first joins raced
            room.restore(*kept)
        for user, what, until in sanctions:
            if what == "ban":
                room.banned.add(user)
            elif until is not None and until > room.muted_until.get(user, 0):
                room.muted_until[user] = until
        self._loaded.add(ch)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(every(self.likes_interval_s, self._flush_likes, "likes flush", log)),
            loop.create_task(every(self.viewers_interval_s, self._flush_viewers, "viewers flush",
                                   log)),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self.chat_log is not None:
            await self.chat_log.drain()
        if self._likes_writing is not None:
            with contextlib.suppress(Exception):
                await self._likes_writing
        await self._save_likes()

    async def record_chat(self, ch: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Room chat made durable before it is published (see server/chatlog.py); the first
        message if this one is a resend of it. Group chat is kept by the community."""
        if self.chat_log is None or not ch.startswith("room:"):
            return None
        return await self.chat_log.record(ch, msg)

    async def forget_chat(self, ch: str, message_id: str | None = None,
                          user: str | None = None) -> None:
        """A deleted message, or a banned user's, is not brought back by a restart."""
        if self.chat_store is not None and ch.startswith("room:"):
            await self.chat_store.delete(ch, message_id, user)

    async def _save_likes(self) -> None:
        """Add the likes counted since the last save to the stored totals: one write for
        every room that moved, coalesced like the `likes` event."""
        if self.chat_store is None:
            return
        deltas: list[tuple[str, int]] = []
        unsaved, self._likes_unsaved = self._likes_unsaved, set()
        for ch in unsaved:
            room = self.by_channel.get(ch)
            if room is not None and room.kind == "room" and room.likes != room.likes_saved:
                deltas.append((ch, room.likes - room.likes_saved))
                room.likes_saved = room.likes
        if not deltas:
            return
        try:
            await self.chat_store.add_likes(deltas)
        except Exception:
            log.exception("saving like totals failed; retried at the next flush")
            for ch, n in deltas:
                if (room := self.by_channel.get(ch)) is not None:
                    room.likes_saved -= n
                    self._likes_unsaved.add(ch)

    def _flush_likes(self) -> None:
        dirty, self.dirty_likes = self.dirty_likes, set()
        self._likes_unsaved |= dirty
        if self._likes_unsaved and (self._likes_writing is None or self._likes_writing.done()):
            self._likes_writing = asyncio.get_running_loop().create_task(self._save_likes())
        if not self.count_likes:
            return
        for ch in dirty:
            room = self.by_channel.get(ch)
            if room is not None and (ev := room.likes_changed()) is not None:
                self.publish(ch, ev[0], ev[1], droppable=True)

    def _flush_viewers(self) -> None:
        dirty, self.dirty_viewers = self.dirty_viewers, set()
        if self.video_counts is not None:  # only the rooms with video viewers, now or before
            counts = self.video_counts()
            for room_id in set(counts) | self._video_rooms:
                ch = room_channel(room_id)
                room = self.by_channel.get(ch)
                n = counts.get(room_id, 0)
                if room is not None and n != room.video_viewers:
                    room.video_viewers = n
                    dirty.add(ch)
            self._video_rooms = {r for r, n in counts.items() if n}
        if not self.count_viewers:  # a cluster: server/cluster/presence.py sums every node's
            return
        for ch in dirty:
            room = self.by_channel.get(ch)
            if room is not None and (ev := room.viewers_changed()) is not None:
                self.publish(ch, ev[0], ev[1], droppable=True)
