"""One suite, two buses: the embedded LocalBus and the cluster RedisBus (real Redis on
127.0.0.1:6379) must behave the same: gap-free seq per channel, one order for every node,
bounded history, since/epoch/resync semantics.

A "node" is a (Hub, bus) pair. With Redis, two nodes are two RedisBus instances on the same
key prefix (as two server processes would be); the embedded bus has a single node, so both
"nodes" are the same one there. Subscribers are recorders that decode the exact websocket
bytes the hub writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from redis.asyncio import Redis

from client_sdk.protocol import SUBPROTOCOL_MSGPACK
from server.bus.local import LocalBus
from server.bus.redis import PUBLISH_LUA, RedisBus
from server.fanout import Hub
from tests.conftest import PrivateRedis

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.timeout(30)


@dataclass(eq=False)
class Recorder:
    """A subscriber that decodes what the hub writes to it, frame by frame."""

    subprotocol: str = SUBPROTOCOL_MSGPACK
    dropped: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def buffered(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        n = data[1] & 0x7F
        offset = 2
        if n == 126:
            n, offset = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, offset = struct.unpack("!Q", data[2:10])[0], 10
        frame = msgpack.unpackb(data[offset:offset + n], raw=False)
        self.events.extend(frame["items"] if frame["op"] == "batch" else [frame])

    def overflow(self) -> None:
        raise AssertionError("no overflow expected")

    def of(self, ch: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ch"] == ch and (type_ is None or e["type"] == type_)]


Bus = LocalBus | RedisBus


@dataclass
class Node:
    hub: Hub
    bus: Bus

    def subscribe(self, ch: str, sub: Recorder) -> None:
        """What Channels.subscribe does: hub first, then tell the bus."""
        self.hub.subscribe(ch, sub)
        self.bus.watch(ch)

    def unsubscribe(self, ch: str, sub: Recorder) -> None:
        self.hub.unsubscribe(ch, sub)
        if not self.hub.has_subscribers(ch):
            self.bus.unwatch(ch)


@dataclass
class Backend:
    name: str
    make: Callable[..., Awaitable[Node]]
    restart: Callable[[], Awaitable[None]]
    nodes: list[Node]
    redis: Redis | None = None
    prefix: str = ""
    shard_url: str | None = None  # "redis-sharded": a second Redis carrying part of the channels

    async def node(self, history: int = 1000) -> Node:
        """A further node of the same cluster (the embedded backend has only one)."""
        if self.name == "local" and self.nodes:
            return self.nodes[0]
        n = await self.make(history)
        self.nodes.append(n)
        return n

    async def settle(self) -> None:
        """Let published events travel: through Redis and back, then out of the hub."""
        for n in self.nodes:
            if isinstance(n.bus, RedisBus):
                await n.bus.drained()
        await asyncio.sleep(0.05)


def clock() -> int:
    return 1_700_000_000_000


@contextlib.asynccontextmanager
async def open_backend(name: str, shard_url: str | None = None) -> AsyncIterator[Backend]:
    if name == "local":
        be = Backend("local", None, None, [])  # type: ignore[arg-type]

        async def make_local(history: int = 1000) -> Node:
            hub = Hub(tick_s=0.002)
            return Node(hub, LocalBus(hub, clock, history=history))

        async def restart_local() -> None:  # the embedded history restarts with the process
            old = be.nodes[0]
            old.bus = LocalBus(old.hub, clock, history=old.bus.history)

        be.make, be.restart = make_local, restart_local
        yield be
        return

    redis = Redis.from_url(REDIS_URL)
    prefix = f"souk-test-{uuid.uuid4().hex[:12]}:"
    be = Backend(name, None, None, [], redis, prefix, shard_url)  # type: ignore[arg-type]
    servers = [redis] + ([Redis.from_url(shard_url)] if shard_url else [])

    async def make_redis(history: int = 1000) -> Node:
        hub = Hub(tick_s=0.002)
        shards = [Redis.from_url(shard_url)] if shard_url else []
        bus = RedisBus(hub, clock, Redis.from_url(REDIS_URL), prefix=prefix, history=history,
                       linger_s=0.2, shards=shards)
        await bus.start()
        return Node(hub, bus)

    async def restart_redis() -> None:  # Redis lost its data (flush / restart without AOF)
        for r in servers:
            keys = [k async for k in r.scan_iter(match=prefix + "*")]
            if keys:
                await r.delete(*keys)

    be.make, be.restart = make_redis, restart_redis
    try:
        yield be
    finally:
        for n in be.nodes:
            assert isinstance(n.bus, RedisBus)
            await n.bus.stop()
            await n.bus.redis.aclose()
        for r in servers:
            keys = [k async for k in r.scan_iter(match=prefix + "*")]
            if keys:
                await r.delete(*keys)
            await r.aclose()


@pytest.fixture(params=["local", "redis", "redis-sharded"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    shard_url = None
    if request.param == "redis-sharded":
        shard_url = request.getfixturevalue("shard_redis").url
    async with open_backend(request.param, shard_url) as be:
        yield be


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async with open_backend("redis") as be:
        yield be


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# ---- the shared assertions --------------------------------------------------------------


async def test_seq_is_gap_free_per_channel_and_delivery_ordered(backend: Backend) -> None:
    a = await backend.node()
    sub = Recorder()
    a.subscribe("room:a", sub)
    a.subscribe("room:b", sub)
    await a.bus.head("room:a")  # subscribed for real (Redis: SUBSCRIBE confirmed)
    await a.bus.head("room:b")
    for i in range(150):
        a.bus.publish("room:a", "chat", {"i": i}, droppable=True)
        if i % 3 == 0:
            a.bus.publish("room:b", "chat", {"i": i})
    await wait_for(lambda: len(sub.of("room:a")) == 150 and len(sub.of("room:b")) == 50)
    assert [e["seq"] for e in sub.of("room:a")] == list(range(1, 151))
    assert [e["i"] for e in sub.of("room:a")] == list(range(150))
    assert [e["seq"] for e in sub.of("room:b")] == list(range(1, 51))
    assert all(e["op"] == "event" and e["ts"] == clock() for e in sub.events)
    assert (await a.bus.head("room:a"))[1] == 150


async def test_two_nodes_see_one_order(backend: Backend) -> None:
    a = await backend.node()
    b = await backend.node()
    on_a, on_b = Recorder(), Recorder()
    a.subscribe("room:x", on_a)
    b.subscribe("room:x", on_b)
    await a.bus.head("room:x")
    await b.bus.head("room:x")
    for i in range(100):  # both nodes publish, interleaved
        (a if i % 2 else b).bus.publish("room:x", "chat", {"i": i, "from": "a" if i % 2 else "b"})
    await wait_for(lambda: len(on_a.of("room:x")) == 100 and len(on_b.of("room:x")) == 100)
    seen_a = [(e["seq"], e["i"]) for e in on_a.of("room:x")]
    seen_b = [(e["seq"], e["i"]) for e in on_b.of("room:x")]
    assert seen_a == seen_b
    assert [s for s, _ in seen_a] == list(range(1, 101))
    # each node's own events keep the order it published them in
    for parity in (0, 1):
        mine = [i for _, i in seen_a if i % 2 == parity]
        assert mine == sorted(mine)


async def test_history_is_bounded_and_since_semantics(backend: Backend) -> None:
    a = await backend.node(history=5)
    sub = Recorder()
    a.subscribe("room:h", sub)
    await a.bus.head("room:h")
    for i in range(8):
        a.bus.publish("room:h", "chat", {"i": i})
    await backend.settle()
    await wait_for(lambda: len(sub.of("room:h")) == 8)
    epoch, seq = await a.bus.head("room:h")
    assert seq == 8
    got = await a.bus.since("room:h", 5, epoch)
    assert got is not None and [e["seq"] for e in got] == [6, 7, 8]
    assert [e["i"] for e in got] == [5, 6, 7]
    assert await a.bus.since("room:h", 8, epoch) == []
    assert await a.bus.since("room:h", 2, None) is None  # seq 3 is gone
    assert [e["seq"] for e in (await a.bus.since("room:h", 3, None)) or []] == [4, 5, 6, 7, 8]
    assert await a.bus.since("room:h", 9, None) is None  # from the future
    assert await a.bus.since("room:h", -1, None) is None
    assert await a.bus.since("room:h", 6, "not-the-epoch") is None


async def test_resume_on_another_node(backend: Backend) -> None:
    a = await backend.node()
    b = await backend.node()
    sub = Recorder()
    a.subscribe("room:r", sub)
    await a.bus.head("room:r")
    for i in range(10):
        a.bus.publish("room:r", "chat", {"i": i})
    await backend.settle()
    await wait_for(lambda: len(sub.of("room:r")) == 10)
    epoch = sub.of("room:r")[0]
    epoch_a, _ = await a.bus.head("room:r")
    # node b has nobody on room:r yet: it answers from the shared history
    epoch_b, seq_b = await b.bus.head("room:r")
    assert (epoch_b, seq_b) == (epoch_a, 10)
    missed = await b.bus.since("room:r", 4, epoch_a)
    assert missed is not None and [e["i"] for e in missed] == [4, 5, 6, 7, 8, 9]
    # now a client resumes on b: subscribe first, then read, then live events continue
    other = Recorder()
    b.subscribe("room:r", other)
    missed = await b.bus.since("room:r", 7, epoch_a)
    assert missed is not None and [e["seq"] for e in missed] == [8, 9, 10]
    a.bus.publish("room:r", "chat", {"i": 10})
    await wait_for(lambda: len(other.of("room:r")) == 1)
    assert other.of("room:r")[0]["seq"] == 11
    assert epoch  # the first event carried the channel in its envelope


async def test_join_mid_stream_has_no_gap_and_no_overlap(backend: Backend) -> None:
    a = await backend.node()
    b = await backend.node()
    first = Recorder()
    a.subscribe("room:j", first)
    await a.bus.head("room:j")

    async def publisher() -> None:
        for i in range(300):
            a.bus.publish("room:j", "chat", {"i": i}, droppable=True)
            if i % 10 == 0:
                await asyncio.sleep(0.001)

    task = asyncio.get_running_loop().create_task(publisher())
    await asyncio.sleep(0.01)
    late = Recorder()
    b.hub.flush("room:j")
    b.subscribe("room:j", late)
    _, head = await b.bus.head("room:j")  # what a join snapshot carries
    await task
    await backend.settle()
    await wait_for(lambda: len(first.of("room:j")) == 300)
    await wait_for(lambda: bool(late.events) and late.events[-1]["seq"] == 300)
    seqs = [e["seq"] for e in late.of("room:j")]
    # everything after the snapshot's seq, exactly once and in order (a few at or below it
    # may arrive when they were in flight: clients drop seq <= what they have)
    after = [s for s in seqs if s > head]
    assert after == list(range(head + 1, 301))


async def test_unwatched_channel_keeps_its_history_for_later(backend: Backend) -> None:
    a = await backend.node()
    for i in range(3):
        a.bus.publish("user:u1", "order", {"i": i})  # nobody subscribed: kept for resume
    await backend.settle()
    epoch, seq = await a.bus.head("user:u1")
    assert seq == 3
    got = await a.bus.since("user:u1", 0, epoch)
    assert got is not None and [e["i"] for e in got] == [0, 1, 2]
    assert all(e["type"] == "order" and e["ch"] == "user:u1" for e in got)


async def test_history_restart_changes_epoch(backend: Backend) -> None:
    a = await backend.node()
    a.bus.publish("room:e", "chat", {"i": 0})
    await backend.settle()
    old_epoch, seq = await a.bus.head("room:e")
    assert seq == 1
    await backend.restart()
    a = backend.nodes[0]
    new_epoch, new_seq = await a.bus.head("room:e")
    assert new_epoch != old_epoch and new_seq == 0
    assert await a.bus.since("room:e", 1, old_epoch) is None
    assert await a.bus.since("room:e", 0, new_epoch) == []


async def test_envelope_fields_cannot_be_overridden(backend: Backend) -> None:
    a = await backend.node()
    sub = Recorder()
    a.subscribe("room:o", sub)
    await a.bus.head("room:o")
    a.bus.publish("room:o", "chat", {"op": "ok", "seq": 99, "ch": "user:x", "type": "t", "text": "x"})
    await wait_for(lambda: len(sub.events) == 1)
    ev = sub.events[0]
    assert (ev["op"], ev["seq"], ev["ch"], ev["type"], ev["text"]) == ("event", 1, "room:o", "chat", "x")


# ---- Redis only: what the embedded bus cannot have --------------------------------------


async def test_redis_gap_is_filled_from_the_stream(redis_backend: Backend) -> None:
    """Events whose pub/sub message never arrived (a reconnect) are read from the stream
    before anything newer is delivered."""
    a = await redis_backend.node()
    assert isinstance(a.bus, RedisBus) and redis_backend.redis is not None
    sub = Recorder()
    a.subscribe("room:g", sub)
    await a.bus.head("room:g")
    a.bus.publish("room:g", "chat", {"i": 0})
    await redis_backend.settle()
    keys = a.bus._keys("room:g")
    for i in (1, 2, 3):  # published to the stream, but on a topic nobody listens to
        body = msgpack.packb([False, {"op": "event", "ch": "room:g", "ts": 1, "type": "chat",
                                      "i": i}])
        await redis_backend.redis.eval(PUBLISH_LUA, 4, *keys, "nowhere", body, "e", 100, 60,
                                       "other-node", i)
    a.bus.publish("room:g", "chat", {"i": 4})
    await wait_for(lambda: len(sub.of("room:g")) == 5)
    assert [(e["seq"], e["i"]) for e in sub.of("room:g")] == [(k + 1, k) for k in range(5)]


async def test_redis_batch_retried_after_a_broken_pipeline_publishes_once(
        redis_backend: Backend) -> None:
    """A pipeline whose replies were lost (the connection broke after Redis ran it) is sent
    again by the writer: the scripts that already ran must not publish a second time."""
    a = await redis_backend.node()
    assert isinstance(a.bus, RedisBus)
    sub = Recorder()
    a.subscribe("room:r", sub)
    await a.bus.head("room:r")
    a.bus.publish("room:r", "chat", {"i": 0})
    await redis_backend.settle()
    base = a.bus._counter
    a.bus._counter += 2  # the two publishes of the batch below take the next two numbers
    items = [("room:r", msgpack.packb([False, {"op": "event", "ch": "room:r", "ts": 1,
                                               "type": "chat", "i": i}, a.bus.node_id]),
              100, base + i) for i in (1, 2)]
    shard = a.bus._shard("room:r")
    await a.bus._run_batch(shard, items[:1])  # the first script ran, then "the connection broke"
    await a.bus._run_batch(shard, items)  # the writer's retry of the whole batch
    a.bus.publish("room:r", "chat", {"i": 3})  # counters go on growing: published
    await wait_for(lambda: len(sub.of("room:r")) == 4)
    await asyncio.sleep(0.1)
    assert [(e["seq"], e["i"]) for e in sub.of("room:r")] == [(1, 0), (2, 1), (3, 2), (4, 3)]


async def test_redis_flush_mid_stream_tells_subscribers_to_resync(redis_backend: Backend) -> None:
    a = await redis_backend.node()
    sub = Recorder()
    a.subscribe("room:f", sub)
    old_epoch, _ = await a.bus.head("room:f")
    for i in range(3):
        a.bus.publish("room:f", "chat", {"i": i})
    await wait_for(lambda: len(sub.of("room:f")) == 3)
    await redis_backend.restart()
    a.bus.publish("room:f", "chat", {"i": 3})
    await wait_for(lambda: len(sub.of("room:f")) == 5)
    resync, ev = sub.of("room:f")[3:]
    assert resync["type"] == "resync" and resync["epoch"] != old_epoch and resync["seq"] == 0
    assert (ev["seq"], ev["i"]) == (1, 3)
    assert await a.bus.head("room:f") == (resync["epoch"], 1)


async def test_redis_unwatch_unsubscribes_after_linger(redis_backend: Backend) -> None:
    a = await redis_backend.node()
    assert isinstance(a.bus, RedisBus) and redis_backend.redis is not None
    sub = Recorder()
    a.subscribe("room:u", sub)
    await a.bus.head("room:u")
    topic = a.bus._topic("room:u")
    assert (await redis_backend.redis.pubsub_numsub(topic))[0][1] == 1
    a.unsubscribe("room:u", sub)
    a.subscribe("room:u", sub)  # back within the grace period: still subscribed, no gap
    a.unsubscribe("room:u", sub)
    await asyncio.sleep(0.4)
    assert "room:u" not in a.bus.watched
    await wait_for(lambda: True)
    assert (await redis_backend.redis.pubsub_numsub(topic))[0][1] == 0


async def test_sharded_bus_puts_each_channel_on_one_shard(shard_redis: PrivateRedis) -> None:
    """With two shards every channel's seq, history and pub/sub live on exactly one Redis,
    both shards carry channels, and two nodes still agree on every channel's order."""
    async with open_backend("redis-sharded", shard_redis.url) as be:
        a, b = await be.node(), await be.node()
        chans = [f"room:s{i}" for i in range(16)]
        sub_a, sub_b = Recorder(), Recorder()
        for ch in chans:
            a.subscribe(ch, sub_a)
            b.subscribe(ch, sub_b)
            await a.bus.head(ch)
            await b.bus.head(ch)
        for i in range(3):
            for n, ch in enumerate(chans):
                (a if n % 2 else b).bus.publish(ch, "chat", {"i": i})
        await wait_for(lambda: len(sub_a.events) == 48 and len(sub_b.events) == 48)
        for ch in chans:
            assert [(e["seq"], e["i"]) for e in sub_a.of(ch)] == [(1, 0), (2, 1), (3, 2)]
            assert sub_a.of(ch) == sub_b.of(ch)
        first, second = Redis.from_url(REDIS_URL), Redis.from_url(shard_redis.url)
        try:
            on = {0: 0, 1: 0}
            assert isinstance(a.bus, RedisBus)
            for ch in chans:
                seq_key = a.bus._keys(ch)[0]
                here = [await first.exists(seq_key), await second.exists(seq_key)]
                assert sorted(here) == [0, 1], (ch, here)  # on one shard, not both
                assert here[a.bus._shard(ch).index] == 1
                on[a.bus._shard(ch).index] += 1
            assert on[0] > 0 and on[1] > 0  # the hash spreads 16 channels over both
        finally:
            await first.aclose()
            await second.aclose()
