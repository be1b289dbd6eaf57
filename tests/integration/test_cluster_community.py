"""Q&A, community groups and connectors across real cluster nodes.

Two `souk serve --redis ... --postgres ...` processes on 127.0.0.1 (a PostgreSQL database and
a Redis prefix per test), real websocket clients on both, a real HTTP receiver standing in
for an external group. What a cluster must not do: know a question on one node only, mirror
or deliver it once per node, let two nodes overfill a group, or let two answers win.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from client_sdk import Client
from client_sdk.errors import SoukError
from server.connectors.signing import signed_headers
from tests.conftest import REDIS_URL, ServerProcess, free_port, token

HOOK_SECRET = "receiver-shared-secret-0123456789"

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(120)]


class Receiver:
    """A real HTTP server on 127.0.0.1 playing an external group's generic webhook."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def hook(self, request: web.Request) -> web.Response:
        self.items.append(orjson.loads(await request.read()))
        return web.json_response({"ok": True})

    def of(self, kind: str, question: str) -> list[dict[str, Any]]:
        return [i for i in self.items if i.get("type") == kind and i.get("question") == question]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    """Wait for a condition (the machine is shared and busy: generous, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Node:
    """A `souk serve` process of the cluster and its inbound webhook port."""

    def __init__(self, proc: ServerProcess, hook_port: int) -> None:
        self.proc = proc
        self.url = proc.url
        self.hook_port = hook_port


def nodes(
    server_process: Callable[..., ServerProcess], database: str, prefix: str, tmp_path: Path
) -> tuple[Node, Node]:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    out = []
    for name in ("a", "b"):
        hook = free_port()
        proc = server_process(*flags, "--webhook-port", str(hook), "--allow-private-webhooks",
                              data_dir=tmp_path / name)
        out.append(Node(proc, hook))
    return out[0], out[1]


def drain(stream: Any) -> list[dict[str, Any]]:
    """Every event a stream holds now (without waiting)."""
    out = []
    while not stream.queue.empty():
        ev = stream.queue.get_nowait()
        if ev is not None:
            out.append(ev)
    return out


def client(node: Node, sub: str, role: str = "viewer") -> Client:
    return Client(node.url, token(sub, role), reconnect=False)


async def test_qa_mirroring_and_connectors_across_two_nodes(
    server_process: Callable[..., ServerProcess],
    database: str,
    prefix: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    a, b = nodes(server_process, database, prefix, tmp_path)
    st_a, admin_a, mod_b = client(a, "s1", "streamer"), client(a, "ad", "admin"), client(b, "mod", "moderator")
    m_a, m_b = client(a, "m-a", "member"), client(b, "m-b", "member")
    v_a, v_b = client(a, "v-a"), client(b, "v-b")
    everyone = (st_a, admin_a, mod_b, m_a, m_b, v_a, v_b)
    for c in everyone:
        await c.connect()
    try:
        # a group made on A, linked on A, joined from both nodes (B never saw it created)
        gid = (await st_a.request("group_create", tier="core", topic="tea", cap=50))["group"]["id"]
        await st_a.request("link_groups", room="qa", groups=[gid])
        conn = (
            await admin_a.request(
                "connector_create", room="qa", url=f"http://127.0.0.1:{receiver.port}/hook",
                secret=HOOK_SECRET,
            )
        )["connector"]
        assert (await m_b.request("group_join", group=gid))["group"]["id"] == gid
        assert (await m_a.request("group_join", group=gid))["group"]["id"] == gid
        await m_a.join(group=gid)
        await m_b.join(group=gid)  # B lets the member in: membership is the cluster's
        copies_a = m_a.events(f"group:{gid}", types=["question"])
        copies_b = m_b.events(f"group:{gid}", types=["question"])
        seen_a = m_a.events(f"group:{gid}", types=["question"])  # everything, counted at the end
        seen_b = m_b.events(f"group:{gid}", types=["question"])
        await v_a.join("qa")
        await v_b.join("qa")
        room_a = v_a.events("room:qa", types=["question"])
        room_b = v_b.events("room:qa", types=["question"])

        # asked on A: B's viewer sees it; upvoted on B; the same voter again is refused
        q1 = await v_a.ask("qa", "Is the oolong from Fujian?")
        assert (await room_b.next(10))["id"] == q1["id"]
        assert (await room_a.next(10))["id"] == q1["id"]
        assert (await v_b.upvote("qa", q1["id"]))["votes"] == 1
        with pytest.raises(SoukError) as err:  # the same voter again on B
            await v_b.upvote("qa", q1["id"])
        assert err.value.code == "conflict"
        async with client(a, "v-b") as same_on_a:  # and through node A
            await same_on_a.join("qa")
            with pytest.raises(SoukError) as err:
                await same_on_a.upvote("qa", q1["id"])
            assert err.value.code == "conflict"
        assert (await room_a.wait_for(lambda e: e["votes"] == 1, 10))["id"] == q1["id"]
        async with client(a, "late-a") as late_a, client(b, "late-b") as late_b:
            for late in (late_a, late_b):  # both nodes' copies hold the committed count
                snap = await late.join("qa")
                assert [(q["id"], q["votes"]) for q in snap["questions"]] == [(q1["id"], 1)]

        # answered on B by a moderator: A's viewer gets the answer, the group copies too
        await mod_b.answer("qa", q1["id"], "Yes, from Anxi")
        done = await room_a.wait_for(lambda e: e["id"] == q1["id"] and e["status"] == "answered", 10)
        assert done["answer"] == "Yes, from Anxi"
        with pytest.raises(SoukError) as err:  # a second answer, through the other node
            await st_a.answer("qa", q1["id"], "no")
        assert err.value.code == "conflict"

        # asked on A, answered by a member's reply in the group on node B
        q2 = await v_a.ask("qa", "Does it come in 50 g bags?")
        copy_b = await copies_b.wait_for(lambda e: e["origin"]["question"] == q2["id"], 10)
        copy_a = await copies_a.wait_for(lambda e: e["origin"]["question"] == q2["id"], 10)
        assert copy_a["id"] == copy_b["id"] != q2["id"]  # one copy, seen by members on both
        await m_b.chat(group=gid, text="Yes, 50 g and 100 g", reply_to=copy_b["id"])
        answered = await room_a.wait_for(
            lambda e: e["id"] == q2["id"] and e["status"] == "answered", 10
        )
        assert answered["answer"] == "Yes, 50 g and 100 g"
        assert answered["answered_by"]["via"] == "group" and answered["answered_by"]["user"] == "m-b"

        # asked on A, answered through the connector's signed webhook on node B
        q3 = await v_a.ask("qa", "Is there a gift box?")
        inbound_b = f"http://127.0.0.1:{b.hook_port}/hooks/{conn['id']}"  # created on A
        raw = orjson.dumps({"type": "answer", "question": q3["id"], "text": "Yes", "name": "Li"})
        headers = signed_headers(conn["secret"], raw, time.time_ns() // 1_000_000)
        async with aiohttp.ClientSession() as http, http.post(inbound_b, data=raw, headers=headers) as r:
            assert r.status == 200, await r.text()
        via_hook = await room_a.wait_for(lambda e: e["id"] == q3["id"] and e["status"] == "answered", 10)
        assert via_hook["answered_by"]["via"] == "connector"

        # each question reached the external group once, each answer once (two nodes)
        await until(
            lambda: receiver.of("answer", q1["id"]) and receiver.of("answer", q2["id"]),
            what="answers delivered",
        )
        await until(lambda: receiver.of("question", q3["id"]), what="questions delivered")
        # a marker question asked on B, delivered after everything above: nothing is pending
        q4 = await v_b.ask("qa", "marker")
        await until(lambda: receiver.of("question", q4["id"]), what="marker delivered")
        for q in (q1, q2, q3):
            assert len(receiver.of("question", q["id"])) == 1, receiver.items
        for q in (q1, q2):
            assert len(receiver.of("answer", q["id"])) == 1, receiver.items
        assert receiver.of("answer", q3["id"]) == []  # it came from there: no echo

        # mirrored exactly once into the group, whatever node the members sit on
        await copies_a.wait_for(lambda e: e["origin"]["question"] == q4["id"], 10)
        await copies_b.wait_for(lambda e: e["origin"]["question"] == q4["id"], 10)
        for seen in (drain(seen_a), drain(seen_b)):
            for q in (q1, q2, q3, q4):
                copies = {e["id"] for e in seen if e["origin"]["question"] == q["id"]}
                opened = [e for e in seen if e["origin"]["question"] == q["id"] and e["votes"] == 0
                          and e["status"] == "open"]
                assert len(copies) == 1 and len(opened) == 1, (q["id"], seen)
        async with client(b, "m-a") as again:  # the member's view from the other node
            snap = await again.join(group=gid)
        origins = [x["origin"]["question"] for x in snap["questions"]]
        assert sorted(origins) == sorted([q1["id"], q2["id"], q3["id"], q4["id"]])
        pg = await asyncpg.connect(database)
        try:
            rows = await pg.fetch("SELECT question, COUNT(*) AS n FROM mirrors GROUP BY question")
        finally:
            await pg.close()
        assert {r["question"]: r["n"] for r in rows} == {
            q["id"]: 1 for q in (q1, q2, q3, q4)
        }
    finally:
        for c in everyone:
            await c.close()


async def test_racing_joins_never_overfill_a_group(
    server_process: Callable[..., ServerProcess], database: str, prefix: str, tmp_path: Path
) -> None:
    a, b = nodes(server_process, database, prefix, tmp_path)
    async with client(a, "s1", "streamer") as st:
        gid = (await st.request("group_create", tier="normal", topic="jade", cap=4))["group"]["id"]
        await st.request("link_groups", room="jr", groups=[gid])
    fans = [client((a, b)[i % 2], f"fan{i}", "member") for i in range(22)]
    for c in fans:
        await c.connect()
    try:
        # two at first (so both nodes know the group), then everyone at once through both
        for c in fans[:2]:
            await c.request("group_join", group=gid)
        landed = await asyncio.gather(*(c.request("group_join", group=gid) for c in fans[2:]))
    finally:
        for c in fans:
            await c.close()
    pg = await asyncpg.connect(database)
    try:
        rows = await pg.fetch(
            "SELECT g.id, g.cap, COUNT(m.user_id) AS n FROM groups g LEFT JOIN group_members m "
            "ON m.group_id = g.id WHERE g.topic = 'jade' GROUP BY g.id, g.cap"
        )
        members = await pg.fetch("SELECT user_id, group_id FROM group_members")
        links = {r[0] for r in await pg.fetch("SELECT group_id FROM room_links WHERE room='jr'")}
    finally:
        await pg.close()
    assert all(r["n"] <= r["cap"] for r in rows), [dict(r) for r in rows]
    assert sorted(m["user_id"] for m in members) == sorted(f"fan{i}" for i in range(22))
    # every fan's reply names the group the record holds them in
    where = {m["user_id"]: m["group_id"] for m in members}
    for i, reply in enumerate(landed, start=2):
        assert reply["group"]["id"] == where[f"fan{i}"]
    assert len(rows) >= 6  # 22 members at 4 per group
    assert links == {r["id"] for r in rows}  # spill-over groups inherit the room's link
    # both nodes agree on the groups' sizes (their copies follow the record)
    async with client(a, "s1", "streamer") as on_a, client(b, "s1", "streamer") as on_b:

        async def agree() -> bool:
            await asyncio.sleep(0.7)  # up to a dozen ops a look: within 20 ops/s a connection
            for r in rows:
                for node in (on_a, on_b):
                    got = await node.request("group_members", group=r["id"])
                    if len(got["members"]) != r["n"]:
                        return False
            return True

        await until(agree, what="both nodes' group sizes to match PostgreSQL")


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Collector:
    """A node's publish callback: what that node put on the bus."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.events.append((ch, type, fields))

    def on(self, ch: str, type: str) -> list[dict[str, Any]]:
        return [f for c, t, f in self.events if c == ch and t == type]


async def test_overdue_flagged_once_per_cluster_and_targets_follow(
    database: str, prefix: str, tmp_path: Path
) -> None:
    """Two nodes (Community adapters with their own pools and Redis clients, as separate
    processes would have) on one PostgreSQL and one Redis; a shared, controllable clock."""
    from server.cluster.notices import ClusterSync
    from server.community import Community
    from server.store.community import SqlCommunityStore
    from server.store.db import Db
    from server.store.stores import open_db

    clock = Clock(1_764_000_000_000)
    made: list[tuple[Community, Collector, Db, Redis]] = []
    for _ in range(2):
        redis = Redis.from_url(REDIS_URL)
        db = await open_db(database)
        pub = Collector()
        c = Community(SqlCommunityStore(db), pub, clock, overdue_check_s=3600,
                      sync=ClusterSync(redis, prefix))
        await c.start()
        made.append((c, pub, db, redis))
    (a, pub_a, _, _), (b, pub_b, _, _) = made
    try:
        await a.set_answer_target("late", 60)
        await until(lambda: b.board("late").target_s == 60, what="B to learn the target")
        q = await a.ask("late", {"id": "v1", "name": "V", "role": "viewer"}, "anyone?")
        await until(lambda: q["id"] in b.board("late").questions, what="B to learn the question")
        clock.now += 61_000
        flagged = await asyncio.gather(a.check_overdue(), b.check_overdue())
        assert sorted(flagged) == [0, 1]  # both timers saw it late; one flag for the cluster
        staff = pub_a.on("staff:late", "question_overdue") + pub_b.on("staff:late", "question_overdue")
        assert [e["question"]["id"] for e in staff] == [q["id"]]
        assert await a.check_overdue() == 0 and await b.check_overdue() == 0
        # the stats agree on both nodes
        assert (await a.room_stats("late"))["overdue_open"] == 1
        assert (await b.room_stats("late"))["overdue_open"] == 1
    finally:
        for c, _, db, redis in made:
            await c.stop()
            await db.close()
            await redis.aclose()


async def test_welfare_cap_holds_across_nodes(database: str, prefix: str, tmp_path: Path) -> None:
    """Two nodes posting to one welfare group at once (cap 3 a week): the cluster keeps 3,
    whichever node posted them, and a group made on A takes notices on B."""
    from server.cluster.notices import ClusterSync
    from server.community import Community
    from server.errors import SoukError as Refused
    from server.store.community import SqlCommunityStore
    from server.store.db import Db
    from server.store.stores import open_db

    clock = Clock(1_764_000_000_000)
    made: list[tuple[Community, Db, Redis]] = []
    for _ in range(2):
        redis = Redis.from_url(REDIS_URL)
        db = await open_db(database)
        c = Community(SqlCommunityStore(db), Collector(), clock, overdue_check_s=3600,
                      welfare_weekly_cap=3, sync=ClusterSync(redis, prefix))
        await c.start()
        made.append((c, db, redis))
    (a, _, _), (b, _, _) = made
    admin = {"id": "boss", "name": "Boss", "role": "admin"}

    async def post(c: Community, i: int) -> str:
        try:
            await c.notice(admin, "coupon", f"deal {i}", group=gid)
            return "ok"
        except Refused as exc:
            return exc.code

    try:
        gid = (await a.group_create("shop", {"tier": "welfare", "topic": "deals"}))["id"]
        results = await asyncio.gather(*(post((a, b)[i % 2], i) for i in range(8)))
        assert sorted(results) == ["cap_reached"] * 5 + ["ok"] * 3, results
        conn = await asyncpg.connect(database)
        try:
            kept = await conn.fetchval("SELECT COUNT(*) FROM group_notices WHERE group_id=$1", gid)
        finally:
            await conn.close()
        assert kept == 3
        clock.now += 8 * 86_400_000  # next week: the cap starts again, on either node
        assert await post(b, 99) == "ok"
    finally:
        for c, db, redis in made:
            await c.stop()
            await db.close()
            await redis.aclose()


async def test_tags_merged_from_two_nodes_at_once_keep_every_purchase(
        database: str, prefix: str, tmp_path: Path) -> None:
    """Orders confirmed on two nodes at the same moment tag one member: every product is in
    the member's tags afterwards (a read-merge-write without a lock would lose some)."""
    from server.cluster.notices import ClusterSync
    from server.community import Community
    from server.store.community import SqlCommunityStore
    from server.store.db import Db
    from server.store.stores import open_db

    clock = Clock(1_764_000_000_000)
    made: list[tuple[Community, Db, Redis]] = []
    for _ in range(2):
        redis = Redis.from_url(REDIS_URL)
        db = await open_db(database)
        c = Community(SqlCommunityStore(db), Collector(), clock, overdue_check_s=3600,
                      sync=ClusterSync(redis, prefix))
        await c.start()
        made.append((c, db, redis))
    (a, _, _), (b, _, _) = made
    try:
        await asyncio.gather(*(((a, b)[i % 2]).tag_purchase("shop", "buyer", f"p{i}")
                               for i in range(12)))
        conn = await asyncpg.connect(database)
        try:
            bought = await conn.fetchval(
                "SELECT bought FROM member_tags WHERE shop='shop' AND user_id='buyer'")
        finally:
            await conn.close()
        assert sorted(orjson.loads(bought)) == sorted(f"p{i}" for i in range(12))
    finally:
        for c, db, redis in made:
            await c.stop()
            await db.close()
            await redis.aclose()
