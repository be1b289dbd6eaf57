"""The hostile checks against a two-node cluster (`--redis --postgres`), where a single
process cannot show them: a shop's groups refused on either node, rank known on a node the
staff never joined, and a ban lifted on the other node than the one that made it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client_sdk import Client, SoukError
from tests.conftest import ServerProcess, token

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(90)]


def client(url: str, sub: str, role: str = "viewer", **kw: Any) -> Client:
    return Client(url, token(sub, role, **kw), reconnect=False)


async def _code(coro: Any) -> str:
    with pytest.raises(SoukError) as e:
        await coro
    return str(e.value.code)


async def test_shops_rank_and_unban_across_two_nodes(
        server_process: Callable[..., ServerProcess], prefix: str, database: str,
        tmp_path: Path) -> None:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    a, b = (server_process(*flags, data_dir=tmp_path / f"n{i}") for i in range(2))
    # groups: shop B's group, made on A, refused to shop A on either node
    async with client(a.url, "ownerB", "streamer", shop="B") as ob:
        gb = (await ob.request("group_create", tier="normal", topic="tea"))["group"]["id"]
    for node in (a, b):
        async with client(node.url, "fanA", "member", shop="A", groups=["*"]) as fan, \
                client(node.url, "modA", "moderator", shop="A", groups=["*"]) as mod:
            assert await _code(fan.request("group_join", group=gb)) == "forbidden"
            assert await _code(fan.join(group=gb)) == "forbidden"
            assert await _code(mod.request("group_members", group=gb)) == "forbidden"
            assert await _code(mod.request("ban", group=gb, user="x")) == "forbidden"
    # a room first gone live in on A by shop B's streamer is shop B's on B too
    async with client(b.url, "v") as v:
        await v.join("rl")  # B knows the room (unclaimed) before it goes live on A
        async with client(a.url, "ownerB", "streamer", shop="B") as ob:
            await ob.request("room_state", room="rl", state="live")
        async with client(b.url, "stA", "streamer", shop="A") as sa, \
                client(b.url, "modA", "moderator", shop="A") as ma:
            assert await _code(sa.request("room_create", room="rl", title="mine")) == "forbidden"
            assert await _code(ma.request("ban", room="rl", user="v")) == "forbidden"
    # rank: the streamer joined on A only; a moderator on B (watching the room all along)
    async with client(b.url, "mod", "moderator") as mod, client(b.url, "fan") as fan:
        await mod.join("rc")
        await fan.join("rc")
        async with client(a.url, "boss", "streamer") as boss:
            await boss.join("rc")
        assert await _code(mod.request("ban", room="rc", user="boss")) == "forbidden"
        assert await _code(mod.request("mute", room="rc", user="boss")) == "forbidden"
        # a ban made on A, lifted on B: the user joins again on A
        async with client(a.url, "mod2", "moderator") as mod2:
            await mod2.request("ban", room="rc", user="troll")
        async with client(a.url, "troll") as troll:
            assert await _code(troll.join("rc")) == "banned"
        await mod.request("unban", room="rc", user="troll")
    deadline = time.monotonic() + 10
    while True:  # A learns it by the event (or its record, if it stopped watching)
        async with client(a.url, "troll") as troll:
            try:
                await troll.join("rc")
                break
            except SoukError as e:
                assert e.code == "banned" and time.monotonic() < deadline, e
        await asyncio.sleep(0.1)
    async with client(b.url, "troll") as troll:
        await troll.join("rc")
