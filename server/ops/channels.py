"""Channel ops: join, leave, resume. A room and a group are both channels with a snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel, staff_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import Result, op
from server.wsframe import bounded_events

if TYPE_CHECKING:
    from server.app import App
    from server.auth import Identity
    from server.session import Session


async def authorize_channel(app: App, ident: Identity, ch: str) -> None:
    """May this identity subscribe to `ch`? Raises forbidden/not_found/invalid otherwise."""
    kind, _, key = ch.partition(":")
    if not key or not fields.ID_RE.fullmatch(key):
        raise SoukError(Code.INVALID, "'ch' must be room:<id>, group:<id>, user:<id> or staff:<room>")
    if kind == "room":
        if not ident.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
    elif kind == "group":
        if not await app.group_exists(key):
            raise SoukError(Code.NOT_FOUND, f"no group {key}")
        if not await app.may_enter_group(ident, key):
            raise SoukError(Code.FORBIDDEN, f"you are not a member of group {key}")
    elif kind == "user":
        if key != ident.id:
            raise SoukError(Code.FORBIDDEN, "a user channel is private to its user")
    elif kind == "staff":
        if not ident.is_staff or not ident.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, "the staff channel is for the streamer and moderators")
    else:
        raise SoukError(Code.INVALID, "'ch' must be room:<id>, group:<id>, user:<id> or staff:<room>")


def _enter(app: App, s: Session, ch: str) -> None:
    """Count presence and subscribe; the hub is flushed first so that the snapshot or the
    resumed history and the live stream neither overlap nor leave a hole."""
    assert s.identity is not None
    if ch in s.channels:
        return
    if len(s.channels) >= app.cfg.max_channels:
        raise SoukError(Code.RATE_LIMITED, f"at most {app.cfg.max_channels} channels per connection")
    room = None
    if ch.startswith("room:"):
        room = app.rooms.room(ch[5:])
    elif ch.startswith("group:"):
        room = app.rooms.group(ch[6:])
    if room is not None:
        room.enter(s.identity.actor)
        app.rooms.dirty_viewers.add(ch)
    app.hub.flush(ch)
    app.subscribe(s, ch)


@op("join")
async def join(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    await authorize_channel(app, s.identity, ch)
    await app.sanctions.ensure(ch)
    _enter(app, s, ch)
    if kind == "room" and s.identity.is_staff:
        app.hub.flush(staff_channel(key))
        app.subscribe(s, staff_channel(key))
    snapshot = await app.snapshot(ch)
    return {"ch": ch, "snapshot": snapshot}


@op("leave", cost=0.5)
async def leave(app: App, s: Session, frame: Frame) -> Result:
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    if ch not in s.channels:
        raise SoukError(Code.NOT_FOUND, f"you have not joined {ch}")
    app.leave(s, ch)
    if kind == "room":
        app.unsubscribe(s, staff_channel(key))
    return None


@op("resume")
async def resume(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch = frame.get("ch")
    if not isinstance(ch, str) or len(ch) > 80:
        raise SoukError(Code.INVALID, "'ch' must be a channel name")
    seq = fields.integer(frame, "seq", 0, 2**53)
    epoch = frame.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
        raise SoukError(Code.INVALID, "'epoch' must be a string")
    await authorize_channel(app, s.identity, ch)
    await app.sanctions.ensure(ch)
    _enter(app, s, ch)
    app.hub.flush(ch)  # whatever was pending is now in both the history and the socket
    missed = await app.bus.since(ch, seq, epoch)
    head_epoch, head_seq = await app.bus.head(ch)
    # what the client missed, unless it would pass the soft bound: then a snapshot is both
    # smaller and what a client that far behind needs (docs/wire.md, replies are bounded)
    replay = bounded_events(missed, s.subprotocol, app.cfg.soft_limit) if missed else None
    if missed is None or (missed and replay is None):
        snapshot: dict[str, Any] = await app.snapshot(ch)
        s.send({"op": "event", "ch": ch, "type": "resync", "epoch": head_epoch, "seq": head_seq,
                "ts": app.clock_ms(), "snapshot": snapshot})
        return {"ch": ch, "resync": True, "epoch": head_epoch, "seq": head_seq}
    if replay is not None:
        s.send_bytes(replay)
    return {"ch": ch, "missed": len(missed), "epoch": head_epoch, "seq": head_seq}
