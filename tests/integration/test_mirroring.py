"""Q&A mirrored between a live room and its linked groups, over real websockets."""

from __future__ import annotations

import asyncio

import pytest

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import Running


async def setup_groups(server: Running) -> tuple[Client, dict[str, str]]:
    st = server.client("streamer", "streamer")
    await st.connect()
    await st.join("live")
    ids = {}
    for tier in ("core", "normal", "welfare"):
        reply = await st.request("group_create", tier=tier, topic="skincare", cap=5)
        ids[tier] = reply["group"]["id"]
    await st.request("link_groups", room="live", groups=list(ids.values()))
    return st, ids


async def member(server: Running, sub: str, group: str) -> Client:
    c = server.client(sub, "member", groups=[])
    await c.connect()
    await c.request("group_join", group=group)
    await c.join(group=group)
    return c


async def test_question_mirrors_answer_flows_back_without_echo(server: Running) -> None:
    st, ids = await setup_groups(server)
    core, normal = await member(server, "m-core", ids["core"]), await member(server, "m-normal", ids["normal"])
    async with server.client("viewer") as v:
        await v.join("live")
        room_q = v.events("room:live", types=["question"])
        core_q = core.events(f"group:{ids['core']}", types=["question"])
        normal_q = normal.events(f"group:{ids['normal']}", types=["question"])
        q = await v.ask("live", "Does it suit dry skin?")
        assert (await room_q.next(5))["id"] == q["id"]
        copy_core = await core_q.next(5)
        copy_normal = await normal_q.next(5)
        assert copy_core["origin"] == {"room": "live", "question": q["id"]}
        assert copy_core["text"] == "Does it suit dry skin?" and copy_core["id"] != q["id"]
        assert copy_normal["id"] not in (copy_core["id"], q["id"])
        # a member answers by replying to the mirrored copy in the core group
        await core.chat(group=ids["core"], text="Yes, I use it daily", reply_to=copy_core["id"])
        answered = await room_q.wait_for(lambda e: e["status"] == "answered", 5)
        assert answered["answer"] == "Yes, I use it daily"
        other = await normal_q.wait_for(lambda e: e["status"] == "answered", 5)
        assert other["id"] == copy_normal["id"]
        # no echo: the core group gets no second copy of its own answer
        await asyncio.sleep(0.3)
        assert all(e["status"] != "open" or e["id"] != copy_core["id"] for e in list(core_q.queue._queue))  # type: ignore[attr-defined]
        # a reconnecting member sees no duplicate
        dup = normal.events(f"group:{ids['normal']}", types=["question"])
        assert normal._ws is not None
        normal._ws.transport.abort()
        await asyncio.sleep(1.0)
        assert await normal.ping() > 0
        assert dup.queue.empty()
        snap = await normal.join(group=ids["normal"])
        assert [x["id"] for x in snap["questions"]].count(copy_normal["id"]) == 1
    for c in (st, core, normal):
        await c.close()


async def test_streamer_answer_updates_every_group_copy(server: Running) -> None:
    st, ids = await setup_groups(server)
    core = await member(server, "m1", ids["core"])
    async with server.client("viewer") as v:
        await v.join("live")
        core_q = core.events(f"group:{ids['core']}", types=["question"])
        q = await v.ask("live", "Shipping to Hangzhou?")
        await core_q.next(5)
        await st.request("answer", room="live", question=q["id"], text="Yes, 2 days")
        ev = await core_q.wait_for(lambda e: e["status"] == "answered", 5)
        assert ev["answer"] == "Yes, 2 days"
    await st.close()
    await core.close()


async def test_spill_over_welfare_rules_and_link_filter(server: Running) -> None:
    st, ids = await setup_groups(server)
    joined = []
    for i in range(7):
        c = server.client(f"fan{i}", "member")
        await c.connect()
        reply = await c.request("group_join", tier="core", topic="skincare")
        joined.append(reply["group"]["id"])
        await c.close()
    assert joined[:5] == [ids["core"]] * 5
    assert joined[5] == joined[6] != ids["core"]  # the sixth spilled into a new core group
    w = await member(server, "w1", ids["welfare"])
    with pytest.raises(SoukError) as err:
        await w.chat(group=ids["welfare"], text="hi")
    assert err.value.code == "forbidden"
    for i in range(3):
        await st.request("notice", group=ids["welfare"], kind="coupon", text=f"coupon {i}")
    with pytest.raises(SoukError) as err:
        await st.request("notice", group=ids["welfare"], kind="coupon", text="one too many")
    assert err.value.code == "cap_reached"
    core = await member(server, "linker", ids["normal"])
    with pytest.raises(SoukError) as err:
        await core.chat(group=ids["normal"], text="cheap at http://spam.example.com")
    assert err.value.code == "filtered"
    async with server.client("v") as v:
        await v.join("live")
        with pytest.raises(SoukError) as err:
            await v.chat("live", "add me on wechat: wxid_spammer123")
        assert err.value.code == "filtered"
    for c in (st, w, core):
        await c.close()


async def test_overdue_questions_are_flagged_to_staff(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(answer_target_s=10)
    async with srv.client("mod", "moderator") as mod, srv.client("v") as v:
        await mod.join("late")
        await v.join("late")
        flags = mod.events("staff:late", types=["question_overdue"])
        q = await v.ask("late", "anyone there?")
        await asyncio.sleep(1.5)
        assert flags.queue.empty()  # not yet due
        real = srv.app.community.clock_ms
        srv.app.community.clock_ms = lambda: real() + 11_000  # time travel past the target
        ev = await flags.next(5)
        assert ev["question"]["id"] == q["id"] and ev["target_s"] == 10
        viewer_side = v.events("staff:late")
        await asyncio.sleep(0.2)
        assert viewer_side.queue.empty()  # staff only
