"""Shop and group-claim authorization, in one place, derived from each op's declared Scope.

Why here and not in the handlers: the role gate (server/ops/registry.py) says *who* may call
an op; this module says *where*. A group belongs to a shop and a room to the shop of the
streamer who created it (or first went live in it). The gateway calls `authorize` after the
role gate, before the handler, for every op that names a room, a group or a channel directly
(`Scope.field` without `via`), so a new op declaring its scope is checked without its handler
doing anything:

- a group named by any op must exist (`not_found`) and belong to the caller's shop
  (`forbidden`), unless the caller's role acts in every shop (`ANY_SHOP`);
- `group_join` (and `join`/`resume` of a group channel) honours the token's `groups` claim:
  `["*"]` is every group of the token's shop, a list names exactly the groups the token may
  enter; a token that lists no group may join its own shop's groups (they are open to the
  shop's customers), never another shop's;
- a staff member (moderator, streamer) acts in a room only if the room has no shop yet or is
  their shop's.

Objects named through another (`buy` names a `sale`, `poll_close` a `poll`) are resolved by
the handler, which checks the shop of what it found.

The HTTP API's routes declare their scope the same way (`path[1]`: the id in the URL), and
`authorize_route` holds them to the same rules before their handler: the token must admit the
room, and staff read only their own shop's rooms and groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.errors import SoukError
from server.ops.fields import ID_RE
from server.ops.registry import ANY_SHOP, MODERATORS, OpSpec, RouteSpec, Target, may

if TYPE_CHECKING:
    from server.auth import Identity
    from server.services import Services
    from server.session import Session

_CHECKED = (Target.ROOM, Target.GROUP, Target.CHANNEL)


def _direct(spec: OpSpec) -> tuple[tuple[Target, str], ...]:
    """The (target, field) pairs of `spec` this module checks, computed once per op."""
    cached = _DIRECT.get(spec.name)
    if cached is None:
        cached = _DIRECT[spec.name] = tuple(
            (sc.target, sc.field) for sc in spec.scope
            if sc.target in _CHECKED and sc.field is not None and sc.via is None)
    return cached


_DIRECT: dict[str, tuple[tuple[Target, str], ...]] = {}


def lists_group(ident: Identity, group: str) -> bool:
    """Does the token's `groups` claim admit `group` (in the token's shop: checked apart)?"""
    return not ident.groups or "*" in ident.groups or group in ident.groups


async def group_shop(sv: Services, ident: Identity, group: str) -> str:
    """The group's shop; `not_found` if there is no such group, `forbidden` if it belongs to
    another shop than the caller's (unless the caller's role acts in every shop)."""
    if not await sv.community.group_known(group):
        raise SoukError(Code.NOT_FOUND, f"no group {group}")
    g = sv.community.directory.groups.get(group)
    if g is None:
        raise SoukError(Code.NOT_FOUND, f"no group {group}")
    if not may(ident.role, ANY_SHOP) and g.shop != ident.shop:
        raise SoukError(Code.FORBIDDEN, "this group belongs to another shop")
    return str(g.shop)


async def check_room(sv: Services, ident: Identity, room: str) -> None:
    """Staff act only in rooms of their shop (or rooms no shop has claimed yet)."""
    if not may(ident.role, MODERATORS) or may(ident.role, ANY_SHOP):
        return
    r = sv.rooms.get(room_channel(room))
    if r is not None and r.owned:
        shop: str | None = r.shop
    elif sv.rooms.store.shared:  # claimed on another node, maybe (a `state` event has no shop)
        record = await sv.rooms.store.room(room)
        shop = record.shop if record is not None else None
    else:
        shop = None
    if shop is not None and shop != ident.shop:
        raise SoukError(Code.FORBIDDEN, f"room {room} belongs to another shop")


async def staff_in_room(sv: Services, ident: Identity, room: str) -> None:
    """For a staff op on an object that belongs to a room (a sale, a draw, a poll): the token
    must admit the room and the room must be the caller's shop's."""
    if not ident.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    await check_room(sv, ident, room)


async def _check_group(sv: Services, s: Session, op: str, group: str, *, entering: bool) -> None:
    ident = s.identity
    assert ident is not None
    if not entering and group_channel(group) in s.channels:
        return  # checked when the channel was joined
    await group_shop(sv, ident, group)
    if entering and not may(ident.role, ANY_SHOP) and not lists_group(ident, group):
        # a member already in the group (placed, invited) may still follow its channel
        if op == "group_join" or not await sv.community.is_member_fresh(ident.id, group):
            raise SoukError(Code.FORBIDDEN, f"your token does not list group {group}")


_ENTERING = frozenset({"group_join", "join", "resume"})


async def authorize(sv: Services, s: Session, spec: OpSpec, frame: Frame) -> None:
    """Refuse (`forbidden`, `not_found`) an op on a room or group outside the caller's shop or
    its token's claim. Fields that are absent or not ids are left to the handler's
    validation (`invalid`)."""
    checks = _direct(spec)
    if not checks:
        return
    ident = s.identity
    assert ident is not None
    entering = spec.name in _ENTERING
    for target, field in checks:
        value = frame.get(field)
        if not isinstance(value, str):
            continue
        if target is Target.CHANNEL:
            target_kind, _, value = value.partition(":")
            if target_kind == "group":
                target = Target.GROUP
            elif target_kind in ("room", "staff"):
                target = Target.ROOM
            else:
                continue
        if not ID_RE.fullmatch(value):
            continue
        if target is Target.GROUP:
            await _check_group(sv, s, spec.name, value, entering=entering)
        elif may(ident.role, MODERATORS):
            await check_room(sv, ident, value)


async def authorize_route(sv: Services, ident: Identity, spec: RouteSpec, parts: list[str]) -> None:
    """Refuse a route on a room or group named in its path outside the token's rooms
    (`forbidden` with the route's refusal) or, for staff, outside their shop. A path id that
    is not an id is left to the handler (no such room or group can exist)."""
    for sc in spec.scope:
        if sc.via is not None or sc.field is None or not sc.field.startswith("path["):
            continue
        at = int(sc.field[5:-1])
        value = parts[at] if at < len(parts) else ""
        if not ID_RE.fullmatch(value):
            continue
        if sc.target is Target.ROOM:
            if not ident.may_enter_room(value):
                raise SoukError(Code.FORBIDDEN, spec.refusal)
            await check_room(sv, ident, value)
        elif sc.target is Target.GROUP:
            await group_shop(sv, ident, value)
