"""Redis dies and comes back empty (no persistence) while a channel is live.

Uses a private redis-server on a free 127.0.0.1 port (the shared one on 6379 must never be
restarted under other engineers' tests). What must hold: publishes made while Redis is down
are kept and sent when it is back, subscribers are told to resync (the history restarted,
so the epoch changed) and then receive the new stream gap-free; resume with the old epoch
resyncs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from server.bus.redis import RedisBus
from server.fanout import Hub
from tests.conftest import PrivateRedis
from tests.integration.test_bus_backends import Recorder, wait_for
from tests.integration.test_cluster import client

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(60)]


async def _ping(url: str) -> None:
    for _ in range(100):
        r = Redis.from_url(url)
        try:
            await r.ping()
            return
        except Exception:
            await asyncio.sleep(0.05)
        finally:
            await r.aclose()
    raise AssertionError("redis did not come up")


async def test_redis_restart_mid_stream(private_redis: PrivateRedis) -> None:
    await _ping(private_redis.url)
    hub = Hub(tick_s=0.002)
    bus = RedisBus(hub, lambda: 1, Redis.from_url(private_redis.url), prefix="t:", linger_s=0.2)
    bus.snapshot_of = lambda ch, epoch, seq: {"chat": ["what this node holds"], "at": [epoch, seq]}
    await bus.start()
    try:
        sub = Recorder()
        hub.subscribe("room:z", sub)
        bus.watch("room:z")
        old_epoch, _ = await bus.head("room:z")
        for i in range(3):
            bus.publish("room:z", "chat", {"i": i})
        await wait_for(lambda: len(sub.events) == 3)

        private_redis.kill()
        await asyncio.sleep(0.3)
        for i in range(3, 5):  # published while Redis is away: queued, not lost
            bus.publish("room:z", "chat", {"i": i})
        await asyncio.sleep(0.3)
        private_redis.start()
        await _ping(private_redis.url)

        await wait_for(lambda: [e.get("i") for e in sub.of("room:z", "chat")] == [0, 1, 2, 3, 4],
                       timeout=15)
        after = sub.events[3:]
        resync = [e for e in after if e["type"] == "resync"]
        assert len(resync) == 1 and resync[0]["epoch"] != old_epoch
        # the node's state outlived Redis: the resync hands it over, labelled with the reset
        assert resync[0]["snapshot"] == {"chat": ["what this node holds"],
                                         "at": [resync[0]["epoch"], resync[0]["seq"]]}
        new_epoch = resync[0]["epoch"]
        chats = [e for e in after if e["type"] == "chat"]
        # the new history starts right after the resync point, gap-free
        assert [e["seq"] for e in chats] == list(range(resync[0]["seq"] + 1, resync[0]["seq"] + 3))
        assert after.index(resync[0]) < after.index(chats[0])
        assert (await bus.head("room:z")) == (new_epoch, chats[-1]["seq"])
        assert await bus.since("room:z", 3, old_epoch) is None  # old epoch: resync
        # and the channel keeps working
        bus.publish("room:z", "chat", {"i": 5})
        await wait_for(lambda: sub.events[-1].get("i") == 5, timeout=5)
        assert sub.events[-1]["seq"] == chats[-1]["seq"] + 1
    finally:
        await bus.stop()
        await bus.redis.aclose()


async def test_server_resync_after_redis_loss_carries_the_rooms_state(
        private_redis: PrivateRedis, server_factory: Callable[..., Any]) -> None:
    """End to end: a viewer of a real server is told to resync when Redis comes back empty,
    and the resync's snapshot is the room as the node still holds it (its chat), so the
    client does not need a fresh `join` to redraw."""
    await _ping(private_redis.url)
    srv = await server_factory(redis=private_redis.url, redis_prefix="loss:")
    async with client(srv.url, "s1", "streamer") as st, client(srv.url, "v1") as v:
        await st.join("lr")
        await v.join("lr")
        chats = v.events("room:lr", types=["chat"])
        await st.chat("lr", "before the loss")
        await chats.next(10)
        resyncs = v.events("room:lr", types=["resync"])
        private_redis.kill()
        private_redis.start()
        await _ping(private_redis.url)
        await st.chat("lr", "after the loss")
        resync = await resyncs.next(20)
        texts = [m["text"] for m in resync["snapshot"]["chat"]]
        assert "before the loss" in texts
        assert resync["snapshot"]["seq"] == resync["seq"]
        assert resync["snapshot"]["epoch"] == resync["epoch"]
        after = await chats.next(10)
        assert after["text"] == "after the loss" and after["seq"] == resync["seq"] + 1
