"""The cluster bus: per-channel seq, history and fan-out between nodes through Redis.

Why this shape (docs/scaleout.md):
- One Lua script per publish does INCR seq, XADD to a bounded stream and PUBLISH, atomically,
  so the order on the Redis pub/sub channel *is* the seq order and every node sees one order.
- A node SUBSCRIBEs only to channels its hub has local subscribers for (`watch`/`unwatch`,
  called by the App), so fan-out traffic goes only where a viewer is.
- `publish` is called synchronously by the domain adapters; it must not block the loop, so it
  only queues. One writer task pipelines the queued scripts on one connection: FIFO on one
  connection keeps per-channel order.
- Every node delivers to its hub in seq order: a message that arrives early waits while the
  gap is fetched from the stream (a gap only happens after a pub/sub reconnect).
- The channel's `epoch` lives in Redis next to its seq and is created with it, so a client can
  resume on any node, and a history that restarts (Redis flushed, keys expired) gets a new
  epoch: clients are told to resync instead of being handed the wrong events.
- Shards: the bus may spread channels over several independent Redis servers (`--redis`
  plus `--redis-shard`, the same list in the same order on every node): a channel's keys and
  its pub/sub topic live on the shard its name hashes to (CRC-32), so each Redis carries only
  its share of the publishes and of the fan-out to nodes. Each shard has its own connection,
  writer, subscriber connection and reader; per-channel order needs nothing across shards.
- Keys of one channel also share a hash tag (`{room:x}`), for a Redis Cluster behind a proxy.

Stream entry ids are `0-<seq>`, so `since` is one XRANGE by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import zlib
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError, RedisError

from server.bus.base import envelope, history_limit
from server.fanout import Event, Hub

log = logging.getLogger("souk.bus.redis")

# KEYS: seq, epoch, log, pubs.  ARGV: pub/sub channel, body, epoch candidate, maxlen, ttl
# seconds, node id, the node's publish counter.
# The TTL (idle channels vanish) is refreshed every 64th event: cheaper, and a TTL of hours
# makes the difference moot.
# `pubs` holds each node's last counter on the channel: a batch retried after a connection
# broke mid-pipeline (some scripts ran, the replies were lost) runs those again, and they
# must not publish twice. A node's counter only grows and one connection keeps its order,
# so "counter <= last" means "already published".
PUBLISH_LUA = """
local last = redis.call('HGET', KEYS[4], ARGV[6])
if last and tonumber(last) >= tonumber(ARGV[7]) then return -1 end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
end
local seq = redis.call('INCR', KEYS[1])
local ep = redis.call('GET', KEYS[2])
if not ep then
  ep = ARGV[3]
  redis.call('SET', KEYS[2], ep)
end
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], '0-' .. seq, 'e', ARGV[2])
if seq % 64 == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], ep .. '\\n' .. seq .. '\\n' .. ARGV[2])
return seq
"""

# KEYS: seq, epoch, log.  ARGV: epoch candidate, ttl seconds.  -> {epoch, seq}
HEAD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], 0, 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  redis.call('DEL', KEYS[3])
end
local ep = redis.call('GET', KEYS[2])
if not ep then
  ep = ARGV[1]
  redis.call('SET', KEYS[2], ep, 'EX', ARGV[2])
end
return {ep, redis.call('GET', KEYS[1])}
"""

CONTROL = "__node__"
ORIGIN = "\x00origin"  # key of the publishing node's id while an event is in the bus
REPLAY = 200  # events of a channel's recent history applied when a node starts watching it  # a channel every node stays subscribed to, so the reader always has one


@dataclass(eq=False)
class _Watch:
    """What this node knows of one channel it is subscribed to."""

    ch: str
    ready: asyncio.Future[None]
    epoch: str = ""
    delivered: int = 0  # last seq handed to the hub
    early: list[bytes] = field(default_factory=list)  # messages before the base was read
    ahead: dict[int, tuple[Event, bool]] = field(default_factory=dict)  # out of order
    gate: int = 0  # > 0 while a resume reads the history: hold deliveries
    held: list[tuple[Event, bool]] = field(default_factory=list)
    fetching: bool = False
    linger: asyncio.TimerHandle | None = None


class _Shard:
    """One Redis server of the bus: the channels that hash to it, with their own connection,
    publish queue, subscriber connection and tasks."""

    def __init__(self, index: int, redis: Redis) -> None:
        self.index = index
        self.redis = redis
        self.outbox: deque[tuple[str, bytes, int, int]] = deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.control: deque[tuple[str, str]] = deque()
        self.control_wake = asyncio.Event()
        self.pending_acks: dict[str, int] = {}
        self.pubsub: PubSub | None = None
        self.publish_sha = ""
        self.head_sha = ""
        self.published = 0


class RedisBus:
    """Publish/head/since over Redis; same contract as LocalBus (server/bus/base.py).

    `redis` is the first shard (and the Redis other cluster features use); `shards` adds more
    Redis servers for the bus only."""

    def __init__(
        self,
        hub: Hub,
        clock_ms: Callable[[], int],
        redis: Redis,
        *,
        prefix: str = "souk:",
        history: int = 1000,
        user_history: int = 100,
        ttl_s: int = 24 * 3600,
        linger_s: float = 5.0,
        batch: int = 512,
        shards: Sequence[Redis] = (),
    ) -> None:
        self.hub = hub
        self.clock_ms = clock_ms
        self.redis = redis
        self.shards = [_Shard(i, r) for i, r in enumerate([redis, *shards])]
        self.prefix = prefix
        self.history = history
        self.user_history = user_history
        self.ttl_s = ttl_s
        self.linger_s = linger_s
        self.batch = batch
        self.watched: dict[str, _Watch] = {}
        self.node_id = secrets.token_hex(6)
        # called with (ch, event) for every event another node published on a watched channel
        self.on_remote: Callable[[str, Event], None] | None = None
        # (ch, epoch, seq) -> the channel's snapshot as this node holds it, for the `resync`
        # pushed when Redis lost the channel's history (None: an empty snapshot)
        self.snapshot_of: Callable[[str, str, int], dict[str, Any]] | None = None
        self.lost = 0  # events given up after Redis refused them
        self._counter = 0  # numbers this node's publishes (see PUBLISH_LUA)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    @property
    def published(self) -> int:
        """Scripts Redis has run for this node (all shards)."""
        return sum(sh.published for sh in self.shards)

    # ---- keys -----------------------------------------------------------------------
    def _keys(self, ch: str) -> list[str]:
        tag = f"{self.prefix}{{{ch}}}"
        return [tag + ":seq", tag + ":epoch", tag + ":log", tag + ":pubs"]

    def _topic(self, ch: str) -> str:
        return self.prefix + ch

    def _shard(self, ch: str) -> _Shard:
        if len(self.shards) == 1:
            return self.shards[0]
        return self.shards[zlib.crc32(ch.encode()) % len(self.shards)]

    def _limit(self, ch: str) -> int:
        return history_limit(ch, self.history, self.user_history)

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sh in self.shards:
            sh.publish_sha = str(await sh.redis.script_load(PUBLISH_LUA))
            sh.head_sha = str(await sh.redis.script_load(HEAD_LUA))
            sh.pubsub = sh.redis.pubsub()
            await sh.pubsub.subscribe(self._topic(CONTROL))
            self._tasks += [
                loop.create_task(self._writer(sh)),
                loop.create_task(self._reader(sh)),
                loop.create_task(self._controller(sh)),
            ]

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained(), 2)
        tasks = [*self._tasks, *self._background]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        for w in self.watched.values():
            if w.linger is not None:
                w.linger.cancel()
        for sh in self.shards:
            if sh.pubsub is not None:
                with contextlib.suppress(Exception):
                    await sh.pubsub.aclose()
                sh.pubsub = None
        for sh in self.shards[1:]:  # the first is the caller's connection: it closes it
            with contextlib.suppress(Exception):
                await sh.redis.aclose()

    async def drained(self) -> None:
        """Wait until every queued publish has been run by Redis (tests, drain)."""
        for sh in self.shards:
            while sh.outbox or not sh.idle.is_set():
                await sh.idle.wait()
                await asyncio.sleep(0)

    # ---- publishing -----------------------------------------------------------------
    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.publish(ch, type, fields, droppable=droppable)

    def publish(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        """Queue the event; seq is assigned by Redis and the event comes back through pub/sub
        to every node watching the channel, this one included."""
        event = envelope(ch, type, fields, self.clock_ms())
        body = msgpack.packb([droppable, event, self.node_id], use_bin_type=True)
        self._counter += 1
        sh = self._shard(ch)
        sh.outbox.append((ch, body, self._limit(ch), self._counter))
        sh.idle.clear()
        sh.wake.set()

    async def _writer(self, sh: _Shard) -> None:
        delay = 0.05
        while True:
            if not sh.outbox:
                sh.idle.set()
                sh.wake.clear()
                await sh.wake.wait()
                continue
            n = min(len(sh.outbox), self.batch)
            items = [sh.outbox[i] for i in range(n)]
            try:
                await self._run_batch(sh, items)
            except NoScriptError:
                sh.publish_sha = str(await sh.redis.script_load(PUBLISH_LUA))
                continue
            except (RedisError, OSError) as exc:
                log.warning("redis publish failed, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.05
            for _ in range(n):
                sh.outbox.popleft()
            sh.published += n

    async def _run_batch(self, sh: _Shard, items: list[tuple[str, bytes, int, int]]) -> None:
        pipe = sh.redis.pipeline(transaction=False)
        ttl, node = self.ttl_s, self.node_id
        for ch, body, limit, n in items:
            pipe.evalsha(sh.publish_sha, 4, *self._keys(ch), self._topic(ch), body,
                         secrets.token_hex(4), limit, ttl, node, n)
        results = await pipe.execute(raise_on_error=False)
        for r in results:
            if isinstance(r, NoScriptError):
                raise r
            if isinstance(r, Exception):
                # a script error on one event (never expected): count it, keep the others
                self.lost += 1
                log.error("redis refused an event: %s", r)

    # ---- head and since -------------------------------------------------------------
    async def _remote_head(self, ch: str) -> tuple[str, int]:
        sh = self._shard(ch)
        try:
            ep, seq = await sh.redis.evalsha(
                sh.head_sha, 3, *self._keys(ch)[:3], secrets.token_hex(4), self.ttl_s)
        except NoScriptError:
            sh.head_sha = str(await sh.redis.script_load(HEAD_LUA))
            return await self._remote_head(ch)
        return _text(ep), int(seq)

    async def head(self, ch: str) -> tuple[str, int]:
        """(epoch, last seq) that this node has delivered for `ch` (or Redis's, unwatched)."""
        w = self.watched.get(ch)
        if w is None:
            return await self._remote_head(ch)
        if not w.ready.done():
            await asyncio.shield(w.ready)
        return w.epoch, w.delivered

    async def since(self, ch: str, seq: int, epoch: str | None) -> list[Event] | None:
        """Events after `seq` up to what this node has delivered, or None when they are no
        longer all in the history (or the epoch differs). While it reads, deliveries on `ch`
        are held, so the caller can send the result before anything newer goes out."""
        w = self.watched.get(ch)
        if w is None:
            ep, last = await self._remote_head(ch)
            return await self._range(ch, seq, epoch, ep, last)
        if not w.ready.done():
            await asyncio.shield(w.ready)
        w.gate += 1
        try:
            return await self._range(ch, seq, epoch, w.epoch, w.delivered)
        finally:
            asyncio.get_running_loop().call_soon(self._ungate, w)

    async def _range(self, ch: str, seq: int, epoch: str | None, ep: str,
                     last: int) -> list[Event] | None:
        if epoch is not None and epoch != ep:
            return None
        if seq > last or seq < 0:
            return None
        if seq == last:
            return []
        events = [ev for ev, _ in await self._read_range(ch, seq + 1, last)]
        for ev in events:
            ev.pop(ORIGIN, None)
        if len(events) != last - seq or events[0]["seq"] != seq + 1:
            return None
        return events

    def _ungate(self, w: _Watch) -> None:
        w.gate -= 1
        if w.gate == 0 and w.held:
            held, w.held = w.held, []
            for ev, droppable in held:
                self.hub.deliver(w.ch, ev, droppable)

    # ---- watching -------------------------------------------------------------------
    def watch(self, ch: str) -> None:
        """The hub has a local subscriber on `ch`: make sure this node receives it."""
        w = self.watched.get(ch)
        if w is not None:
            if w.linger is not None:
                w.linger.cancel()
                w.linger = None
            return
        loop = asyncio.get_running_loop()
        self.watched[ch] = _Watch(ch, loop.create_future())
        sh = self._shard(ch)
        sh.pending_acks[ch] = sh.pending_acks.get(ch, 0) + 1
        sh.control.append(("subscribe", ch))
        sh.control_wake.set()

    def unwatch(self, ch: str) -> None:
        """The hub lost its last subscriber on `ch`: unsubscribe after a grace period (viewers
        come and go; a channel re-joined within it costs nothing)."""
        w = self.watched.get(ch)
        if w is None or w.linger is not None:
            return
        w.linger = asyncio.get_running_loop().call_later(self.linger_s, self._drop, ch)

    def forget(self, ch: str) -> None:
        """The history is Redis's (capped per channel, server/bus/base.py); this process keeps
        a channel's state only while it is watched, which `unwatch` ends."""

    def forget_idle(self, prefix: str, before_ms: int, subscribed: Callable[[str], bool]) -> int:
        return 0

    def _drop(self, ch: str) -> None:
        w = self.watched.get(ch)
        if w is None or self.hub.has_subscribers(ch):
            if w is not None:
                w.linger = None
            return
        del self.watched[ch]
        if not w.ready.done():
            w.ready.cancel()
        sh = self._shard(ch)
        sh.control.append(("unsubscribe", ch))
        sh.control_wake.set()

    async def _controller(self, sh: _Shard) -> None:
        """Send SUBSCRIBE/UNSUBSCRIBE in order, consecutive ones of a kind in one command."""
        while True:
            if not sh.control:
                sh.control_wake.clear()
                await sh.control_wake.wait()
                continue
            kind = sh.control[0][0]
            names: list[str] = []
            while sh.control and sh.control[0][0] == kind and len(names) < 1000:
                names.append(self._topic(sh.control.popleft()[1]))
            assert sh.pubsub is not None
            try:
                if kind == "subscribe":
                    await sh.pubsub.subscribe(*names)
                else:
                    await sh.pubsub.unsubscribe(*names)
            except (RedisError, OSError) as exc:
                log.warning("redis %s failed, retrying: %s", kind, exc)
                for name in reversed(names):
                    sh.control.appendleft((kind, name[len(self.prefix):]))
                await asyncio.sleep(0.2)

    # ---- receiving ------------------------------------------------------------------
    async def _reader(self, sh: _Shard) -> None:
        assert sh.pubsub is not None
        plen = len(self.prefix)
        while True:
            try:
                msg = await sh.pubsub.get_message(timeout=None)
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub lost, reconnecting: %s", exc)
                await asyncio.sleep(0.2)
                continue
            if msg is None:
                continue
            kind = msg["type"]
            ch = _text(msg["channel"])[plen:]
            if kind == "message":
                w = self.watched.get(ch)
                if w is None:
                    continue
                if not w.ready.done():
                    w.early.append(msg["data"])
                else:
                    self._accept(w, msg["data"])
            elif kind == "subscribe" and ch != CONTROL:
                self._on_subscribed(sh, ch)

    def _on_subscribed(self, sh: _Shard, ch: str) -> None:
        n = sh.pending_acks.get(ch, 0)
        if n > 0:
            n -= 1
            if n:
                sh.pending_acks[ch] = n
            else:
                sh.pending_acks.pop(ch, None)
        w = self.watched.get(ch)
        if w is None or n > 0:
            return
        if not w.ready.done():
            self._spawn(self._read_base(w))
        else:  # a confirmation nobody asked for: the connection came back, catch up
            self._spawn(self._catch_up(w))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_base(self, w: _Watch) -> None:
        """Subscribed: everything published from now on reaches us, so the current seq is
        the point from which this node delivers."""
        for attempt in range(50):
            try:
                w.epoch, w.delivered = await self._remote_head(w.ch)
                if self.on_remote is not None and w.delivered > 0:
                    for ev, _ in await self._read_range(
                            w.ch, max(1, w.delivered - REPLAY + 1), w.delivered):
                        if ev.pop(ORIGIN, None) is not None:
                            self.on_remote(w.ch, ev)
                break
            except (RedisError, OSError) as exc:
                log.warning("reading head of %s failed: %s", w.ch, exc)
                await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
        if w.ready.done():
            return
        w.ready.set_result(None)
        early, w.early = w.early, []
        for data in early:
            self._accept(w, data)

    async def _read_range(self, ch: str, lo: int, hi: int) -> list[tuple[Event, bool]]:
        """Events lo..hi (seq, inclusive) that the stream still holds."""
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await self._shard(ch).redis.xrange(
            self._keys(ch)[2], f"0-{lo}", f"0-{hi}"))
        return [self._decode(_id_seq(rid), data[b"e"]) for rid, data in rows]

    def _decode(self, seq: int, body: bytes) -> tuple[Event, bool]:
        droppable, event, *origin = msgpack.unpackb(body, raw=False)
        event["seq"] = seq
        if origin and origin[0] != self.node_id:
            event[ORIGIN] = origin[0]  # taken off again before the hub sees the event
        return event, bool(droppable)

    def _accept(self, w: _Watch, data: bytes) -> None:
        ep_b, seq_b, body = data.split(b"\n", 2)
        ep, seq = ep_b.decode(), int(seq_b)
        if ep != w.epoch:
            self._reset(w, ep, seq - 1)
        if seq <= w.delivered:
            return
        event, droppable = self._decode(seq, body)
        if seq == w.delivered + 1:
            self._deliver(w, event, droppable)
            while w.delivered + 1 in w.ahead:
                ev, dr = w.ahead.pop(w.delivered + 1)
                self._deliver(w, ev, dr)
        else:
            w.ahead[seq] = (event, droppable)
            if not w.fetching:
                w.fetching = True
                self._spawn(self._fill(w))

    def _deliver(self, w: _Watch, event: Event, droppable: bool) -> None:
        w.delivered = event["seq"]
        remote = event.pop(ORIGIN, None) is not None
        if w.gate:
            w.held.append((event, droppable))
        else:
            self.hub.deliver(w.ch, event, droppable)
        if remote and self.on_remote is not None:
            self.on_remote(w.ch, event)  # another node's event: let this node's state follow

    async def _fill(self, w: _Watch) -> None:
        """A hole between what was delivered and what arrived: read it from the stream."""
        try:
            while w.ahead and self.watched.get(w.ch) is w:
                first = min(w.ahead)
                if first <= w.delivered + 1:
                    while w.delivered + 1 in w.ahead:
                        ev, dr = w.ahead.pop(w.delivered + 1)
                        self._deliver(w, ev, dr)
                    for s in [s for s in w.ahead if s <= w.delivered]:
                        del w.ahead[s]
                    continue
                got = await self._read_range(w.ch, w.delivered + 1, first - 1)
                if not got or got[0][0]["seq"] != w.delivered + 1:
                    # trimmed away: clients must resync from here
                    self._reset(w, w.epoch, first - 1)
                for ev, dr in got:
                    if ev["seq"] == w.delivered + 1:
                        self._deliver(w, ev, dr)
        except (RedisError, OSError) as exc:
            log.warning("filling a gap on %s failed: %s", w.ch, exc)
        finally:
            w.fetching = False

    async def _catch_up(self, w: _Watch) -> None:
        """After a pub/sub reconnect: deliver what was published while we were away."""
        try:
            ep, last = await self._remote_head(w.ch)
        except (RedisError, OSError):
            return
        if ep != w.epoch:
            self._reset(w, ep, 0)
        if last > w.delivered:
            await self._fill_to(w, last)

    async def _fill_to(self, w: _Watch, last: int) -> None:
        got = await self._read_range(w.ch, w.delivered + 1, last)
        if got and got[0][0]["seq"] != w.delivered + 1:
            self._reset(w, w.epoch, got[0][0]["seq"] - 1)
        for ev, dr in got:
            if ev["seq"] == w.delivered + 1:
                self._deliver(w, ev, dr)

    def _reset(self, w: _Watch, epoch: str, seq: int) -> None:
        """The history restarted (new epoch) or lost events we need: tell local subscribers
        to resync, from `seq` in `epoch`."""
        log.info("channel history reset", extra={"ch": w.ch, "epoch": epoch, "seq": seq})
        w.epoch, w.delivered = epoch, seq
        w.ahead = {s: v for s, v in w.ahead.items() if s > seq}
        snapshot: dict[str, Any] = {}
        if self.snapshot_of is not None:
            try:  # the node's state outlived Redis's history: hand it over with the reset
                snapshot = self.snapshot_of(w.ch, epoch, seq)
            except Exception:
                log.exception("snapshot for the resync of %s failed", w.ch)
        event: Event = {"op": "event", "ch": w.ch, "type": "resync", "epoch": epoch, "seq": seq,
                        "ts": self.clock_ms(), "snapshot": snapshot}
        self.hub.deliver(w.ch, event, False)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _id_seq(rid: Any) -> int:
    return int(_text(rid).partition("-")[2])
