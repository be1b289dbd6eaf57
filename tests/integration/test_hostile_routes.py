"""The HTTP API's authorization matrix, generated from the route registry as the ops' matrix
is from the op registry: every GET route that names a room or a group in its path × every
role it admits × shop A's and shop B's room or group, over real HTTP with bearer tokens that
admit every room and group (`*`).

Expected: on its own shop's room or group a role is never refused by a scope check; on the
other shop's, staff (moderator, streamer) are refused (`403`, or `404` for a group), while an
admin, who acts in every shop, is not; shoppers (viewer, member) may read a room's public
routes whatever its shop. A token that does not list the room is refused, but an admin's
(admins enter every room). A new
route with a room or group in its path is covered here without a line of its own."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from server.ops.registry import ANY_SHOP, MODERATORS, ROUTES, Target, may
from tests.conftest import Running, token

SCOPED = sorted(
    (path, spec.scope[0].target) for path, spec in ROUTES.items()
    if spec.method == "GET" and len(spec.scope) == 1 and spec.scope[0].via is None
    and spec.scope[0].field == "path[1]" and spec.scope[0].target in (Target.ROOM, Target.GROUP))


def status(url: str, tok: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def test_every_room_and_group_route_keeps_to_the_shop_and_the_token(server: Running) -> None:
    assert {p for p, _ in SCOPED} >= {"rooms/*/orders", "rooms/*/sales", "rooms/*/stats",
                                      "rooms/*/draws", "rooms/*/metrics", "groups/*/metrics"}
    world: dict[str, dict[Target, str]] = {}
    for shop in ("A", "B"):
        async with server.client(f"owner{shop}", "streamer", shop=shop, rooms=["*"]) as st:
            room = f"route{shop}"
            await st.request("room_create", room=room, title=f"shop {shop}")
            await st.request("room_state", room=room, state="live")
            group = (await st.request("group_create", tier="normal", topic="tea"))["group"]["id"]
            world[shop] = {Target.ROOM: room, Target.GROUP: group}
    wrong: list[str] = []
    for path, target in SCOPED:
        spec = ROUTES[path]
        for role in sorted(spec.roles):
            for whose in ("A", "B"):
                url = f"{server.http}/api/{path.replace('*', world[whose][target], 1)}"
                got = await asyncio.to_thread(
                    status, url, token(f"caller-{role}", role, shop="A", rooms=["*"], groups=["*"]))
                staff = may(role, MODERATORS) or target is Target.GROUP
                refused = whose == "B" and staff and not may(role, ANY_SHOP)
                if refused != (got in (403, 404)) or (not refused and got != 200):
                    wrong.append(f"{role} on shop {whose}'s {path}: {got}")
            if target is Target.ROOM:  # a token that does not list the room
                url = f"{server.http}/api/{path.replace('*', world['A'][target], 1)}"
                got = await asyncio.to_thread(status, url, token(f"other-{role}", role, shop="A",
                                                                 rooms=["elsewhere"]))
                if got != (200 if may(role, ANY_SHOP) else 403):
                    wrong.append(f"{role} with a token for another room on {path}: {got}")
    assert not wrong, "\n".join(wrong)
