"""Durable room chat in a cluster: the same store on the nodes' shared PostgreSQL. A message
sent on one node is seen on the other, a resend of its `cid` through the other node posts
nothing, and after both nodes are killed (-9) a viewer joining either node gets the history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from client_sdk import Client
from tests.conftest import REDIS_URL, ServerProcess, token

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(120)]


async def test_chat_kept_in_postgres_across_nodes_and_kills(
    server_process: Callable[..., ServerProcess], database: str, prefix: str, tmp_path: Path
) -> None:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    a, b = (server_process(*flags, data_dir=tmp_path / n) for n in ("a", "b"))
    async with Client(a.url, token("ann", rooms=["cc"]), reconnect=False) as ann, \
            Client(b.url, token("bob", rooms=["cc"]), reconnect=False) as bob, \
            Client(b.url, token("ann", rooms=["cc"]), reconnect=False) as ann_on_b:
        await ann.join("cc")
        await bob.join("cc")
        await ann_on_b.join("cc")
        seen = bob.events("room:cc", types=["chat"])
        first = await ann.chat("cc", "hello from A", cid="k1")
        assert (await seen.next(10))["text"] == "hello from A"
        # the same message resent through the other node: the first one, nothing posted
        assert await ann_on_b.chat("cc", "hello from A (resent)", cid="k1") == first
        await bob.chat("cc", "hello from B")
        assert (await seen.next(10))["text"] == "hello from B"
    a.kill9()
    b.kill9()
    # Redis forgets everything (the bus history too): only PostgreSQL can bring the chat back
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        assert keys
        await redis.delete(*keys)
    finally:
        await redis.aclose()
    a, b = (server_process(*flags, data_dir=tmp_path / n, port=p.port) for n, p in (("a", a), ("b", b)))
    for node in (a, b):
        async with Client(node.url, token("late", rooms=["cc"]), reconnect=False) as late:
            snap = await late.join("cc")
            texts = [m["text"] for m in snap["chat"]]
            assert texts.count("hello from A") == 1 and texts.count("hello from B") == 1, texts
            assert "hello from A (resent)" not in texts
