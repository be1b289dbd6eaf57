"""Viewer counts and like totals across the nodes of a cluster: approximate, throttled, cheap.

Why this shape (presence that scales is counts, not member lists): every
`interval_s` each node runs one Lua script per channel it has viewers on. The script writes
the node's local count into the channel's hash (field = node id, value = `count:ms:video`, the
key expiring when nobody refreshes it), drops fields of nodes that stopped refreshing (a killed
node stops counting after `stale_s`), sums the rest and elects one node per channel
(SET NX PX) to publish the `viewers` event when the sum moved. So a count costs one script
per channel per node per second, whatever the number of viewers, and each count reaches
clients once, not once per node. Likes ride along: each node adds the taps it counted since
its last report to the room's counter (INCRBY), and the same leader publishes the total. So do
the viewers receiving the room's video (`video_viewers`): each node's relay counts the end
users it serves (an edge's pull from the origin is not one), and the event carries the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.bus.base import Publish
from server.domain.room import Room
from server.periodic import every

log = logging.getLogger("souk.presence")

# KEYS: hash, leader, likes.  ARGV: node, local count, stale ms, leader ms, new likes, local
# viewers receiving video.  -> {viewers total, leader?, likes total, video viewers total}
# A node's field is `count:ms:video` (a node of the release before writes `count:ms`).
REPORT_LUA = """
local likes = redis.call('INCRBY', KEYS[3], ARGV[5])
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[3], 7 * 86400) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[2]) > 0 or tonumber(ARGV[6]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. now .. ':' .. ARGV[6])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total, video = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local c, at, v = string.match(all[i + 1], '^(%d+):(%d+):?(%d*)$')
  if c == nil or tonumber(at) < now - tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(c)
    video = video + (tonumber(v) or 0)
  end
end
if #all > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local leader = redis.call('GET', KEYS[2])
if (not leader) or leader == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
  return {total, 1, likes, video}
end
return {total, 0, likes, video}
"""


class ClusterPresence:
    """Aggregates the local presence of Rooms (server/rooms.py) over every node."""

    def __init__(
        self,
        redis: Redis,
        rooms: dict[str, Room],
        publish: Publish,
        *,
        prefix: str = "souk:",
        node_id: str | None = None,
        interval_s: float = 1.0,
        stale_s: float = 3.0,
        watched: Callable[[str], bool] = lambda ch: True,
    ) -> None:
        self.redis = redis
        self.rooms = rooms
        self.publish = publish
        self.prefix = prefix
        self.node_id = node_id or secrets.token_hex(6)
        self.interval_s = interval_s
        self.stale_ms = int(stale_s * 1000)
        self.watched = watched
        self.totals: dict[str, int] = {}  # last cluster-wide count seen per channel
        self._reported: dict[str, int] = {}  # last local count (viewers + video) written per channel
        self._published: dict[str, tuple[int, int]] = {}  # last (count, video) published as leader
        self.likes: dict[str, int] = {}  # cluster-wide like totals, last seen
        self._likes_sent: dict[str, int] = {}  # local likes already added to Redis
        self._likes_published: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._sha = ""

    def _keys(self, ch: str) -> list[str]:
        tag = f"{self.prefix}{{{ch}}}"
        return [tag + ":presence", tag + ":presence-leader", tag + ":likes"]

    def total(self, ch: str) -> int:
        """The cluster-wide count for a snapshot: the last sum, or at least the local one."""
        room = self.rooms.get(ch)
        local = room.viewers if room is not None else 0
        return max(self.totals.get(ch, 0), local)

    def likes_total(self, ch: str) -> int:
        room = self.rooms.get(ch)
        unsent = 0 if room is None else room.likes - self._likes_sent.get(ch, 0)
        return self.likes.get(ch, 0) + unsent

    async def start(self) -> None:
        self._sha = str(await self.redis.script_load(REPORT_LUA))
        self._task = asyncio.get_running_loop().create_task(
            every(self.interval_s, self.tick, "presence report", log, (RedisError, OSError)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # leaving: take this node's counts out at once rather than after stale_s
        with contextlib.suppress(RedisError, OSError):
            pipe = self.redis.pipeline(transaction=False)
            for ch in self._reported:
                pipe.hdel(self._keys(ch)[0], self.node_id)
            await pipe.execute()

    async def tick(self) -> None:
        """Report local counts, read the sums, publish the ones this node leads."""
        chans = [ch for ch, room in self.rooms.items()
                 if room.viewers > 0 or room.video_viewers > 0 or self._reported.get(ch, 0) > 0
                 or self.watched(ch)]
        if not chans:
            return
        pipe = self.redis.pipeline(transaction=False)
        counts = []
        liked = []
        for ch in chans:
            room = self.rooms[ch]
            counts.append(room.viewers + room.video_viewers)
            new_likes = room.likes - self._likes_sent.get(ch, 0)
            liked.append(new_likes)
            pipe.evalsha(self._sha, 3, *self._keys(ch), self.node_id, room.viewers,
                         self.stale_ms, self.stale_ms, new_likes, room.video_viewers)
        try:
            results = await pipe.execute()
        except RedisError as exc:
            if "NOSCRIPT" in str(exc):
                self._sha = str(await self.redis.script_load(REPORT_LUA))
                return
            raise
        for ch, count, new_likes, (total, leader, likes, video) in zip(chans, counts, liked, results,
                                                                        strict=True):
            total = int(total)
            self._likes_sent[ch] = self._likes_sent.get(ch, 0) + new_likes
            self.likes[ch] = int(likes)
            if leader and self._likes_published.get(ch, 0) != int(likes):
                self._likes_published[ch] = int(likes)
                self.publish(ch, "likes", {"total": int(likes)}, droppable=True)
            self.totals[ch] = total
            if count > 0:
                self._reported[ch] = count
            else:
                self._reported.pop(ch, None)
            if leader and self._published.get(ch) != (total, int(video)):
                self._published[ch] = (total, int(video))
                self.publish(ch, "viewers", {"count": total, "video_viewers": int(video)}, droppable=True)
            elif not leader:
                self._published.pop(ch, None)
