"""`Community.dispatch`: the ops from client frames, reply shapes, roles and hostile fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.community import OPS, Community
from server.errors import SoukError
from server.store.community import SqlCommunityStore
from server.store.stores import open_db

VIEWER = {"id": "v1", "name": "Vic", "role": "viewer"}
MEMBER = {"id": "u1", "name": "Mei", "role": "member"}
MOD = {"id": "m1", "name": "Mo", "role": "moderator"}
STREAMER = {"id": "s1", "name": "Host", "role": "streamer"}
ADMIN = {"id": "a1", "name": "Ad", "role": "admin"}


def noop(ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
    pass


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[Community]:
    db = await open_db(tmp_path / "souk.db")
    com = Community(SqlCommunityStore(db), noop, lambda: 1_764_000_000_000, overdue_check_s=3600,
                    allow_private_webhooks=True)
    await com.start()
    yield com
    await com.stop()
    await db.close()


async def test_reply_shapes_through_a_whole_flow(c: Community) -> None:
    g = (
        await c.dispatch("group_create", STREAMER, {"tier": "normal", "topic": "tea"}, shop="shop")
    )["group"]
    assert g["tier"] == "normal" and g["cap"] == 350 and g["members"] == 0
    linked = await c.dispatch(
        "link_groups", STREAMER, {"room": "r1", "groups": [g["id"]]}, shop="shop"
    )
    assert linked == {"groups": [g["id"]]}
    joined = await c.dispatch(
        "group_join", MEMBER, {"group": g["id"], "source": "live"}, shop="shop"
    )
    assert joined["group"]["id"] == g["id"] and joined["group"]["members"] == 1
    q = (await c.dispatch("ask", VIEWER, {"room": "r1", "text": "organic?"}))["question"]
    assert q["status"] == "open" and q["name"] == "Vic"
    up = (await c.dispatch("upvote", MEMBER, {"room": "r1", "question": q["id"]}))["question"]
    assert up["votes"] == 1
    ans = await c.dispatch("answer", MOD, {"room": "r1", "question": q["id"], "text": "yes"})
    assert ans["question"]["status"] == "answered"
    staff_view = await c.dispatch("group_members", MOD, {"group": g["id"]})
    assert staff_view["members"][0]["tags"]["source"] == "live"
    member_view = await c.dispatch("group_members", MEMBER, {"group": g["id"]})
    assert "tags" not in member_view["members"][0]  # tags are for staff only
    with pytest.raises(SoukError) as err:
        await c.dispatch("group_members", VIEWER, {"group": g["id"]})
    assert err.value.code == "forbidden"
    sent = await c.dispatch("notice", ADMIN, {"room": "r1", "kind": "coupon", "text": "10% off"})
    assert sent == {"sent": [g["id"]], "skipped": []}
    assert await c.dispatch("group_leave", MEMBER, {"group": g["id"]}) == {}
    conn = await c.dispatch(
        "connector_create", ADMIN, {"room": "r1", "url": "http://127.0.0.1:9/x"}, shop="shop"
    )
    assert conn["connector"]["platform"] == "generic" and len(conn["connector"]["secret"]) >= 16


@pytest.mark.parametrize(
    ("op", "user", "frame", "code"),
    [
        ("ask", VIEWER, {"room": 5, "text": "x"}, "invalid"),
        ("ask", VIEWER, {"room": "r1", "text": ["x"]}, "invalid"),
        ("ask", VIEWER, {"room": "r1", "text": "y" * 501}, "invalid"),
        ("ask", VIEWER, {"room": "r" * 65, "text": "x"}, "invalid"),
        ("ask", VIEWER, {"room": "r1", "text": "buy at evil.com"}, "filtered"),
        ("upvote", VIEWER, {"room": "r1", "question": {"$ne": 1}}, "not_found"),
        ("answer", VIEWER, {"room": "r1", "question": "q", "text": "x"}, "forbidden"),
        ("answer", MOD, {"room": "r1", "question": "nope", "text": "x"}, "not_found"),
        ("dismiss", MEMBER, {"room": "r1", "question": "q"}, "forbidden"),
        ("group_create", MEMBER, {"tier": "core", "topic": "t"}, "forbidden"),
        ("group_create", STREAMER, {"tier": "core", "topic": "t", "cap": 10**9}, "invalid"),
        ("group_create", STREAMER, {"tier": "core", "topic": None}, "invalid"),
        ("group_join", VIEWER, {"tier": "core", "topic": "t"}, "forbidden"),
        ("group_join", MEMBER, {"group": 7}, "invalid"),
        ("group_join", MEMBER, {"group": "nope"}, "not_found"),
        ("group_join", MEMBER, {"tier": "gold", "topic": "t"}, "invalid"),
        ("group_join", MEMBER, {"tier": "core", "topic": "t", "invited_by": 3}, "invalid"),
        ("group_leave", MEMBER, {"group": "nope"}, "not_found"),
        ("remove", MEMBER, {"group": "g", "user": "u2"}, "forbidden"),
        ("group_members", MOD, {"group": None}, "invalid"),
        ("link_groups", VIEWER, {"room": "r1", "groups": ["g"]}, "forbidden"),
        ("link_groups", STREAMER, {"room": "r1", "groups": "g"}, "invalid"),
        ("link_groups", STREAMER, {"room": "r1", "groups": ["nope"]}, "not_found"),
        ("notice", MEMBER, {"room": "r1", "kind": "sale", "text": "x"}, "forbidden"),
        ("notice", ADMIN, {"room": "r1", "kind": "spam", "text": "x"}, "invalid"),
        ("notice", ADMIN, {"room": "r1", "group": "g", "kind": "sale", "text": "x"}, "invalid"),
        ("connector_create", STREAMER, {"room": "r1", "url": "http://x"}, "forbidden"),
        ("connector_create", ADMIN, {"room": "r1", "url": "javascript:alert(1)"}, "invalid"),
        ("nonsense", ADMIN, {}, "unknown_op"),
    ],
)
async def test_hostile_and_forbidden_frames(
    c: Community, op: str, user: dict[str, str], frame: dict[str, Any], code: str
) -> None:
    with pytest.raises(SoukError) as err:
        await c.dispatch(op, user, frame, shop="shop")
    assert err.value.code == code


def test_ops_list_matches_protocol() -> None:
    from client_sdk.protocol import Op

    names = {v for k, v in vars(Op).items() if not k.startswith("_")}
    assert set(OPS) <= names
