"""A cluster over real Redis: nodes are real servers on 127.0.0.1 sharing one key prefix.

In-process nodes (two Apps in this loop) for presence, where the timing matters; real server
subprocesses for chat order, resume on another node and `--workers`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import PrivateRedis, Running, ServerProcess, free_port, token

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(60)]


def client(url: str, sub: str, role: str = "viewer", **kw: Any) -> Client:
    return Client(url, token(sub, role), encoding=kw.pop("encoding", "msgpack"),
                  reconnect=kw.pop("reconnect", False))


# ---- in-process nodes -------------------------------------------------------------------


async def test_viewer_counts_are_summed_over_nodes(server_factory: Callable[..., Any],
                                                   prefix: str) -> None:
    a: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix, viewers_interval_s=0.2)
    b: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix, viewers_interval_s=0.2)
    clients = [client(a.url, f"a{i}") for i in range(2)] + [client(b.url, f"b{i}") for i in range(3)]
    try:
        for c in clients:
            await c.connect()
        watcher_a, watcher_b = clients[0], clients[2]
        counts_a = watcher_a.events("room:p", types=["viewers"])
        counts_b = watcher_b.events("room:p", types=["viewers"])
        every = watcher_a.events("room:p", types=["viewers"])
        for c in clients:
            await c.join("p")
        await counts_a.wait_for(lambda e: e["count"] == 5, timeout=10)
        await counts_b.wait_for(lambda e: e["count"] == 5, timeout=10)
        # a late joiner's snapshot carries the cluster-wide count too (as of b's last report,
        # every 0.2 s here)
        await asyncio.sleep(0.5)
        async with client(b.url, "late") as late:
            snap = await late.join("p")
            assert snap["viewers"] >= 5
            await counts_a.wait_for(lambda e: e["count"] == 6, timeout=10)
        # leaving on one node lowers the sum everyone sees
        await clients[1].close()
        await clients[3].close()
        await counts_b.wait_for(lambda e: e["count"] == 3, timeout=10)
        await counts_a.wait_for(lambda e: e["count"] == 3, timeout=10)
        # one count event per change, not one per node: no value is pushed twice in a row
        seen = []
        while not every.queue.empty():
            ev = every.queue.get_nowait()
            assert ev is not None
            seen.append(ev["count"])
        assert seen and seen[-1] == 3
        # (two publishing nodes would repeat every value; a leader hand-over under load may
        # repeat one)
        assert sum(x == y for x, y in itertools.pairwise(seen)) <= 1, seen
    finally:
        for c in clients:
            await c.close()


async def test_chat_crosses_nodes_in_process(server_factory: Callable[..., Any], prefix: str) -> None:
    a: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix)
    b: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix)
    async with client(a.url, "s1", "streamer") as st, client(b.url, "v1") as v1:
        await st.join("c")
        await v1.join("c")
        stream = v1.events("room:c", types=["chat"])
        for i in range(5):
            await st.chat("c", f"m{i}")
        got = [(await stream.next(5)) for _ in range(5)]
        assert [e["text"] for e in got] == [f"m{i}" for i in range(5)]
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)


# ---- real server processes --------------------------------------------------------------


@pytest.fixture
def nodes(server_process: Callable[..., ServerProcess], prefix: str,
          tmp_path: Path) -> Iterator[Callable[[int], list[ServerProcess]]]:
    def start(n: int) -> list[ServerProcess]:
        return [server_process("--redis", REDIS_URL, "--redis-prefix", prefix,
                               data_dir=tmp_path / f"node{i}") for i in range(n)]

    yield start


async def test_viewer_on_b_sees_chat_from_a_in_order(nodes: Callable[[int], list[ServerProcess]]) -> None:
    a, b, c = nodes(3)
    async with client(a.url, "s1", "streamer") as st, client(b.url, "v1") as v1, \
            client(c.url, "v2", encoding="json") as v2, client(a.url, "v3") as v3:
        for x in (st, v1, v2, v3):
            await x.join("r1")
        streams = [x.events("room:r1") for x in (st, v1, v2, v3)]  # every type: seq is per channel
        for i in range(4):  # the streamer on a and viewers on b, c, a all talk
            for x in (st, v1, v2, v3):
                await x.chat("r1", f"{x.user['id']}-{i}")  # type: ignore[index]
        seen = []
        every = []
        for s in streams:
            evs: list[dict[str, Any]] = []
            while sum(e["type"] == "chat" for e in evs) < 16:
                evs.append(await s.next(5))
            every.append([e["seq"] for e in evs])
            seen.append([(e["seq"], e["text"]) for e in evs if e["type"] == "chat"])
        assert seen[0] == seen[1] == seen[2] == seen[3]
        for seqs in every:  # gap-free on every node (viewer counts travel on the channel too)
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # each sender's messages keep the order it sent them in
        for who in ("s1", "v1", "v2", "v3"):
            mine = [t for _, t in seen[0] if t.startswith(who + "-")]
            assert mine == [f"{who}-{i}" for i in range(4)]


async def test_two_nodes_over_two_bus_shards(server_process: Callable[..., ServerProcess],
                                             prefix: str, tmp_path: Path,
                                             shard_redis: PrivateRedis) -> None:
    """`--redis-shard`: rooms spread over two Redis servers, chat still crosses nodes in
    order on every room, and each room's history lives on one of the two."""
    a, b = (server_process("--redis", REDIS_URL, "--redis-prefix", prefix,
                           "--redis-shard", shard_redis.url, data_dir=tmp_path / f"n{i}")
            for i in range(2))
    rooms = [f"sh{i}" for i in range(6)]
    async with client(a.url, "s1", "streamer") as st, client(b.url, "v1") as v:
        streams = {}
        for r in rooms:
            await st.join(r)
            await v.join(r)
            streams[r] = v.events(f"room:{r}")  # every type: a viewer count may come between
        for i in range(3):
            for r in rooms:
                await st.chat(r, f"{r}-{i}")
        for r in rooms:
            got = [await streams[r].next(5)]
            while sum(e["type"] == "chat" for e in got) < 3:
                got.append(await streams[r].next(5))
            assert [e["text"] for e in got if e["type"] == "chat"] == [f"{r}-{i}" for i in range(3)]
            assert [e["seq"] for e in got] == list(range(got[0]["seq"], got[0]["seq"] + len(got)))
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(shard_redis.url)
    try:
        where = [(await first.exists(f"{prefix}{{room:{r}}}:seq"),
                  await second.exists(f"{prefix}{{room:{r}}}:seq")) for r in rooms]
        assert all(sorted(w) == [0, 1] for w in where), where
        assert any(w == (0, 1) for w in where) and any(w == (1, 0) for w in where), where
    finally:
        await first.aclose()
        await second.aclose()


async def test_resume_on_another_node(nodes: Callable[[int], list[ServerProcess]]) -> None:
    a, b = nodes(2)
    async with client(a.url, "s1", "streamer") as st:
        await st.join("r2")
        v = client(a.url, "v1")
        await v.connect()
        snap = await v.join("r2")
        stream = v.events("room:r2", types=["chat"])
        await st.chat("r2", "before")
        first = await stream.next(5)
        epoch, last = snap["epoch"], first["seq"]
        await v.close()
        for i in range(3):  # missed while away
            await st.chat("r2", f"missed-{i}")
        async with client(b.url, "v1") as v2:
            replayed = v2.events("room:r2")
            reply = await v2.request("resume", ch="room:r2", seq=last, epoch=epoch)
            assert not reply.get("resync")
            assert reply["epoch"] == epoch
            # the presence tick may publish a `viewers` event while v1 is away: every missed
            # event comes back, in order, with its original seq, whatever its type
            got = [await replayed.next(5) for _ in range(reply["missed"])]
            assert [e["seq"] for e in got] == list(range(last + 1, last + 1 + reply["missed"]))
            chats = [e["text"] for e in got if e["type"] == "chat"]
            assert chats == ["missed-0", "missed-1", "missed-2"]
            assert all(e["type"] in ("chat", "viewers") for e in got)
            await st.chat("r2", "live")  # and it is subscribed on b from there on
            live = await replayed.next(5)
            while live["type"] != "chat":
                live = await replayed.next(5)
            assert live["text"] == "live" and live["seq"] > got[-1]["seq"]
            # a stale epoch resyncs, on any node
            reply = await v2.request("resume", ch="room:r2", seq=1, epoch="stale")
            assert reply["resync"] is True and reply["epoch"] == epoch


def _wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port never opened")


async def test_workers_share_the_port_restart_and_drain(server_process: Callable[..., ServerProcess],
                                                        prefix: str) -> None:
    port = free_port()
    proc = server_process("--redis", REDIS_URL, "--redis-prefix", prefix, "--workers", "2", port=port)
    assert proc.proc is not None
    import psutil

    def workers() -> list[psutil.Process]:
        return psutil.Process(proc.proc.pid).children()  # type: ignore[union-attr]

    def listening() -> int:
        return sum(1 for p in workers() for x in p.net_connections()
                   if x.status == "LISTEN" and x.laddr.port == port)

    deadline = time.monotonic() + 20
    while listening() < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    first = {p.pid for p in workers()}
    assert len(first) == 2
    # connections are spread by the kernel over both workers, and chat crosses between them
    clients = [client(proc.url, f"w{i}") for i in range(12)]
    try:
        for c in clients:
            await c.connect()
            await c.join("wk")
        streams = [c.events("room:wk", types=["chat"]) for c in clients]
        await clients[0].chat("wk", "hello workers")
        for s in streams:
            assert (await s.next(5))["text"] == "hello workers"
        conns = {p.pid: len([x for x in p.net_connections() if x.status == "ESTABLISHED"])
                 for p in workers()}
        assert all(n > 0 for n in conns.values()), conns  # both workers hold clients
    finally:
        for c in clients:
            await c.close()
    # a crashed worker is replaced
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = {p.pid for p in workers()}
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.1)
    assert len({p.pid for p in workers()}) == 2 and victim not in {p.pid for p in workers()}
    _wait_port(port)
    async with client(proc.url, "after") as c:
        await c.join("wk")
    # SIGTERM drains every worker and the supervisor exits 0
    assert proc.terminate(timeout=15) == 0
    assert not [p for p in first if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


async def test_room_state_follows_across_nodes(server_factory: Callable[..., Any],
                                               prefix: str) -> None:
    """Chat history, pin and room state set on node A are in a snapshot taken on node B; a
    ban on A takes the user out on B and B refuses them; a deletion on A reaches B's state."""
    a: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix)
    b: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix)
    async with client(a.url, "s1", "streamer") as st:
        await st.join("rs")
        ids = [await st.chat("rs", f"hello {i}") for i in range(3)]
        product = (await st.request("product_create", title="Tea", price=990, stock=5))["product"]
        await st.request("pin", room="rs", product=product["id"])
        await st.request("room_state", room="rs", state="live")
        # node b has nobody in rs yet: its first joiner still gets the recent history
        async with client(b.url, "v1") as v1:
            snap = await v1.join("rs")
            assert [m["text"] for m in snap["chat"]] == ["hello 0", "hello 1", "hello 2"]
            assert snap["pinned"]["id"] == product["id"] and snap["state"] == "live"
            # live from here: a's next message lands in b's Room too
            stream = v1.events("room:rs", types=["chat"])
            await st.chat("rs", "later")
            assert (await stream.next(5))["text"] == "later"
            await st.request("delete_message", room="rs", message=ids[0])
            await asyncio.sleep(0.2)
            async with client(b.url, "v2") as v2:
                texts = [m["text"] for m in (await v2.join("rs"))["chat"]]
                assert texts == ["hello 1", "hello 2", "later"]
            # a ban on a: v1 (on b) is expelled at once and cannot come back through b
            expelled = v1.events("room:rs", types=["expelled"])
            await st.request("ban", room="rs", user="v1")
            await expelled.next(5)
            with pytest.raises(SoukError) as exc:
                await v1.join("rs")
            assert exc.value.code == "banned"


async def test_likes_are_summed_over_nodes(server_factory: Callable[..., Any], prefix: str) -> None:
    a: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix, viewers_interval_s=0.2)
    b: Running = await server_factory(redis=REDIS_URL, redis_prefix=prefix, viewers_interval_s=0.2)
    async with client(a.url, "la") as on_a, client(b.url, "lb") as on_b:
        await on_a.join("lk")
        await on_b.join("lk")
        totals_a = on_a.events("room:lk", types=["likes"])
        totals_b = on_b.events("room:lk", types=["likes"])
        for _ in range(5):
            await on_a.like("lk", 3)
            await on_b.like("lk", 4)
        await totals_a.wait_for(lambda e: e["total"] == 35, timeout=10)
        await totals_b.wait_for(lambda e: e["total"] == 35, timeout=10)
        await asyncio.sleep(0.5)  # b's next report reads the total (snapshots are throttled)
        async with client(b.url, "lc") as late:
            assert (await late.join("lk"))["likes"] == 35


async def test_ban_and_mute_hold_on_a_node_that_was_not_watching(
        server_process: Callable[..., ServerProcess], prefix: str, database: str,
        tmp_path: Path) -> None:
    """A ban made on A long before anyone joins the room on B (further back than B's replay
    of recent events) still keeps the user out on B: B loads the room's recorded sanctions
    from PostgreSQL before the join passes. Mutes likewise."""
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    a, b = (server_process(*flags, data_dir=tmp_path / f"s{i}") for i in range(2))
    async with client(a.url, "m", "moderator") as mod:
        await mod.join("sx")
        await mod.request("ban", room="sx", user="troll")
        await mod.request("mute", room="sx", user="loud", seconds=600)
        for k in range(6):  # push both out of the 200 events a node replays on watch
            async with client(a.url, f"m{k}", "moderator") as helper:  # 40 ops burst each
                await helper.join("sx")
                for i in range(38):
                    await helper.chat("sx", f"filler {k}.{i}")
    async with client(b.url, "troll") as troll, client(b.url, "loud") as loud, \
            client(b.url, "fine") as fine:
        with pytest.raises(SoukError) as err:
            await troll.join("sx")
        assert err.value.code == "banned"
        await loud.join("sx")
        with pytest.raises(SoukError) as err:
            await loud.chat("sx", "hello?")
        assert err.value.code == "muted"
        await fine.join("sx")
        await fine.chat("sx", "hi")
