"""A reply in a community group answers the room's question in every group, not only the first:
group chat message ids count per group ("m1" is in every group), so the answer path must not
take a second group's "m1" for one it has already handled."""

from __future__ import annotations

from tests.conftest import Running


async def test_the_first_reply_in_each_of_two_groups_answers_its_room(server: Running) -> None:
    for n in (1, 2):
        room = f"ans{n}"
        async with server.client(f"boss{n}", "streamer", rooms=[room]) as boss, \
                server.client(f"fan{n}", rooms=[room]) as fan, \
                server.client(f"mem{n}", "member", rooms=[room], groups=["*"]) as member:
            gid = (await boss.request("group_create", tier="core", topic=f"tea{n}", title="G"))["group"]["id"]
            await boss.request("link_groups", room=room, groups=[gid])
            await fan.join(room)
            await member.request("group_join", group=gid)
            await member.join(group=gid)
            mirrored = member.events(ch=f"group:{gid}", types=["question"])
            answers = fan.events(ch=f"room:{room}", types=["question"])
            await fan.ask(room, "Is it organic?")
            copy = await mirrored.wait_for(lambda e: e.get("text") == "Is it organic?", timeout=5)
            reply = await member.chat(group=gid, text="Yes", reply_to=copy["id"])
            assert reply == "m1"  # the group's first message, in both rounds
            answered = await answers.wait_for(lambda e: e.get("status") == "answered", timeout=5)
            assert answered["answer"] == "Yes"
