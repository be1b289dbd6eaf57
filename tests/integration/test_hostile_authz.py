"""Hostile clients against authorization: shops, the token's groups claim, rank, and
sanctions lifted — each over a real server on 127.0.0.1 with real websocket clients."""

from __future__ import annotations

from typing import Any

import pytest

from client_sdk import SoukError
from tests.conftest import Running


async def _refused(code: str, coro: object) -> None:
    with pytest.raises(SoukError) as e:
        await coro  # type: ignore[misc]
    assert e.value.code == code, e.value


async def test_groups_claim_and_shop_isolation(server: Running) -> None:
    """`group_join` honours the token's `groups` claim; `*` is every group of the token's
    shop, never another shop's; staff of shop A can do nothing in shop B's groups."""
    async with server.client("sa", "streamer", shop="A") as sa, \
            server.client("sb", "streamer", shop="B") as sb:
        a1 = (await sa.request("group_create", tier="normal", topic="tea"))["group"]["id"]
        a2 = (await sa.request("group_create", tier="core", topic="tea"))["group"]["id"]
        b1 = (await sb.request("group_create", tier="normal", topic="tea"))["group"]["id"]
    async with server.client("m1", "member", shop="A", groups=[a1]) as m1, \
            server.client("m2", "member", shop="A", groups=["*"]) as m2, \
            server.client("m3", "member") as m3, \
            server.client("fan", "member", shop="B", groups=["*"]) as fan:
        assert (await m1.request("group_join", group=a1))["group"]["id"] == a1
        await _refused("forbidden", m1.request("group_join", group=a2))  # not in its claim
        await _refused("forbidden", m1.request("group_join", tier="core", topic="tea"))
        await _refused("forbidden", m1.join(group=a2))
        assert (await m2.request("group_join", group=a2))["group"]["id"] == a2
        await _refused("forbidden", m2.request("group_join", group=b1))  # `*`: its shop only
        await _refused("forbidden", m2.join(group=b1))
        await _refused("forbidden", m2.request("resume", ch=f"group:{b1}", seq=0))
        # a token without `shop` belongs to the default shop
        await _refused("forbidden", m3.request("group_join", group=a1))
        await fan.request("group_join", group=b1)
        await fan.join(group=b1)
        await fan.chat(group=b1, text="hello from B")
    # staff of shop A: nothing in shop B's group (tags, sanctions, deletes, notices, polls)
    async with server.client("modA", "moderator", shop="A", groups=["*"]) as mod, \
            server.client("stA", "streamer", shop="A") as st:
        for op, extra in [("group_members", {}), ("ban", {"user": "fan"}),
                          ("mute", {"user": "fan"}), ("warn", {"user": "fan"}),
                          ("remove", {"user": "fan"}), ("unban", {"user": "fan"}),
                          ("delete_message", {"message": "m1"}),
                          ("poll_create", {"question": "q?", "options": ["a", "b"]})]:
            await _refused("forbidden", mod.request(op, group=b1, **extra))
        await _refused("forbidden", mod.request("group_join", group=b1))
        await _refused("forbidden", st.request("notice", group=b1, kind="info", text="x"))
        await _refused("forbidden", st.request("layer_invite", group=b1, layer="vip"))
        await _refused("not_found", mod.request("ban", group="nosuchgroup", user="fan"))
        members = (await mod.request("group_members", group=a1))["members"]
        assert [m["user"] for m in members] == ["m1"] and "tags" in members[0]  # its own shop's group: served


async def test_rooms_belong_to_the_shop_that_created_them(server: Running) -> None:
    async with server.client("sa", "streamer", shop="A") as sa, \
            server.client("sb", "streamer", shop="B") as sb, \
            server.client("modB", "moderator", shop="B") as mb, \
            server.client("v", "viewer", shop="B") as v:
        await sa.request("room_create", room="ra", title="A's room")
        await sa.request("room_state", room="ra", state="live")
        await v.join("ra")  # viewers of any shop watch any room
        await _refused("forbidden", sb.request("room_create", room="ra", title="mine now"))
        await _refused("forbidden", sb.request("room_state", room="ra", state="ended"))
        await _refused("forbidden", sb.request("pin", room="ra"))
        await _refused("forbidden", mb.request("ban", room="ra", user="v"))
        await _refused("forbidden", mb.request("delete_message", room="ra", message="m1"))
        # a room first gone live in by a streamer is theirs
        await sb.request("room_state", room="rb", state="live")
        await _refused("forbidden", sa.request("room_create", room="rb", title="taken"))
        snap = await v.join("rb")
        assert snap["state"] == "live"


async def test_rank_and_unban_unmute(server_factory: object) -> None:
    """Nobody sanctions a rank at or above their own, even offline (the room's staff are
    recorded); unban/unmute lift a sanction and are kept in the record (after a restart)."""
    start = server_factory  # type: ignore[assignment]
    srv: Running = await start()  # type: ignore[operator]
    data_dir = srv.app.cfg.data_dir
    async with srv.client("boss", "streamer") as boss, srv.client("mod", "moderator") as mod, \
            srv.client("mod2", "moderator") as mod2, srv.client("adm", "admin") as adm, \
            srv.client("troll") as troll:
        await boss.join("r1")
        await mod.join("r1")
        await adm.join("r1")
        await mod2.join("r1")
        await troll.join("r1")
    # the staff are offline now: their rank still protects them
    async with srv.client("mod", "moderator") as mod, srv.client("boss", "streamer") as boss, \
            srv.client("adm", "admin") as adm, srv.client("troll") as troll:
        for target in ("boss", "adm", "mod2"):
            await _refused("forbidden", mod.request("ban", room="r1", user=target))
            await _refused("forbidden", mod.request("mute", room="r1", user=target))
            await _refused("forbidden", mod.request("warn", room="r1", user=target))
        await _refused("forbidden", boss.request("ban", room="r1", user="adm"))
        await boss.request("mute", room="r1", user="mod", seconds=60)  # streamer > moderator
        await adm.request("ban", room="r1", user="boss")  # admin > streamer
        await adm.request("unban", room="r1", user="boss")
        await mod.request("ban", room="r1", user="troll")
        await _refused("banned", troll.join("r1"))
        await boss.join("r1")
        lifted = boss.events("room:r1", types=["unbanned", "unmuted"])
        await mod.unban("r1", "troll")  # the SDK's methods
        await boss.unmute("r1", "mod")
        got = {(await lifted.next(5))["type"], (await lifted.next(5))["type"]}
        assert got == {"unbanned", "unmuted"}
        await troll.join("r1")
        await mod.join("r1")
        await mod.chat("r1", "free to speak again")
        await boss.request("mute", room="r1", user="troll", seconds=600)
    rows = await srv.app.stores.rooms.db.rows(  # type: ignore[attr-defined]
        "SELECT user_id, kind, by_user FROM sanctions WHERE ch = 'room:r1' ORDER BY id")
    assert [(r["user_id"], r["kind"], r["by_user"]) for r in rows] == [
        ("mod", "mute", "boss"), ("boss", "ban", "adm"), ("boss", "unban", "adm"),
        ("troll", "ban", "mod"), ("troll", "unban", "mod"), ("mod", "unmute", "boss"),
        ("troll", "mute", "boss")]
    await srv.app.stop()
    again: Running = await start(data_dir=data_dir)  # type: ignore[operator]
    async with again.client("troll") as troll, again.client("mod", "moderator") as mod:
        await troll.join("r1")  # the ban was lifted, and stays lifted
        await _refused("muted", troll.chat("r1", "still muted?"))
        await _refused("forbidden", mod.request("ban", room="r1", user="boss"))


async def test_connector_urls_must_be_public(server_factory: Any) -> None:
    """SSRF: an admin token may not point a connector at loopback, link-local (cloud
    metadata), private or reserved addresses, whether written as an address or a name that
    resolves to one; `--allow-private-webhooks` lifts the rule."""
    srv: Running = await server_factory()
    async with srv.client("adm", "admin") as adm:
        for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]/x",
                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x",
                    "https://192.168.1.1/x", "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x",
                    "http://240.0.0.1/x", "http://224.0.0.1/x"):
            with pytest.raises(SoukError) as e:
                await adm.request("connector_create", room="r1", url=url)
            assert e.value.code == "forbidden" and "--allow-private-webhooks" in str(e.value), url
        with pytest.raises(SoukError) as e:
            await adm.request("connector_create", room="r1", url="http://no-such-host.invalid/x")
        assert e.value.code == "invalid"
    open_srv: Running = await server_factory(allow_private_webhooks=True)
    async with open_srv.client("adm", "admin") as adm:
        conn = (await adm.request("connector_create", room="r1", url="http://127.0.0.1:9/x"))
        assert conn["connector"]["url"] == "http://127.0.0.1:9/x"


async def test_delivery_refuses_a_name_that_turned_private() -> None:
    """The check holds at each connection too (a DNS answer changed after creation)."""
    import ipaddress

    from server.connectors.addresses import PublicResolver, is_public

    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert not is_public(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT
    resolver = PublicResolver()
    try:
        with pytest.raises(OSError):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
