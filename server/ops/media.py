"""WebRTC signalling ops on the same websocket: publish/unpublish, watch/unwatch, ice.

The media relay (media/) knows nothing of tokens or rooms' rules; these handlers check the
role and the room, name the peer after the user and the connection, and remember what the
connection holds so that a dropped websocket releases its media too (`release`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar, cast

from client_sdk.protocol import Code, Frame, room_channel, staff_channel
from media.errors import MediaError
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import ROOM, STREAMERS, VIEWERS, Result, op

if TYPE_CHECKING:
    from server.services import Relay, Services
    from server.session import Session

log = logging.getLogger("souk.ops.media")
T = TypeVar("T")


def _relay(sv: Services) -> Relay:
    if sv.media is None:
        raise SoukError(Code.UNAVAILABLE, "media is not enabled on this server")
    return sv.media


def _room(s: Session, frame: Frame) -> str:
    assert s.identity is not None
    room = fields.ident(frame, "room")
    if not s.identity.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    return room


def peer_id(s: Session) -> str:
    assert s.identity is not None
    return f"{s.identity.id}#{s.id}"


def _offer(frame: Frame) -> str:
    """The SDP offer as the client sent it: the relay checks it (a string, its size, its
    sections) and refuses anything else with `invalid`, so hostile input is judged there."""
    return cast(str, frame.get("sdp"))


async def _call(step: Awaitable[T]) -> T:
    try:
        return await step
    except MediaError as err:
        raise SoukError(err.code, err.message) from None


async def release(sv: Services, s: Session) -> None:
    """A connection went away: give up what it published or watched (never raises)."""
    if sv.media is None or not s.media:
        return
    for kind, room in list(s.media):
        try:
            if kind == "publish":
                await sv.media.unpublish(room)
                if sv.cascade is not None:
                    await sv.cascade.withdraw(room)
            else:
                await sv.media.unwatch(room, peer_id(s))
        except Exception:
            log.exception("releasing media failed", extra={"room": room, "kind": kind})


@op("publish", roles=STREAMERS, scope=ROOM, cost=2)
async def publish(sv: Services, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    result = await _call(_relay(sv).publish(room, peer_id(s), _offer(frame)))
    s.media.add(("publish", room))
    if sv.cascade is not None:  # cluster: this node is the room's media origin now
        await sv.cascade.advertise(room)
    await start_recording(sv, room)
    return dict(result)


async def start_recording(sv: Services, room: str) -> None:
    """A live room published on this node records here, if it records (never fails the op:
    a recording that cannot start is told to the staff, the live goes on)."""
    state = sv.rooms.get(room_channel(room))
    if sv.replays is None or state is None or state.state != "live":
        return
    try:
        await sv.replays.live(room)
    except Exception as exc:
        log.exception("starting a recording failed", extra={"room": room})
        sv.bus.publish(staff_channel(room), "recording_failed",
                       {"room": room, "replay": None, "reason": f"could not start: {exc}"})


@op("unpublish", roles=STREAMERS, scope=ROOM)
async def unpublish(sv: Services, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    await _call(_relay(sv).unpublish(room))
    s.media.discard(("publish", room))
    if sv.cascade is not None:
        await sv.cascade.withdraw(room)
    return None


@op("watch", roles=VIEWERS, scope=ROOM, cost=2)
async def watch(sv: Services, s: Session, frame: Frame) -> Result:
    """Watch a room. In a cluster, a room published on another node is pulled from there
    first (once per room per node). ``local: true`` (what an edge sends its origin) asks for
    a local publisher only, so a pull never cascades on: no loops between nodes."""
    arrived = time.monotonic()  # the relay measures watch-to-first-keyframe from here
    room = _room(s, frame)
    local = frame.get("local", False)
    if not isinstance(local, bool):
        raise SoukError(Code.INVALID, "local must be a boolean")
    relay = _relay(sv)
    if sv.cascade is not None and not local:
        await _call(sv.cascade.ensure_pull(room))
    result = await _call(
        relay.watch(room, peer_id(s), _offer(frame), edge=local, arrived=arrived)
    )
    s.media.add(("watch", room))
    return dict(result)


@op("unwatch", roles=VIEWERS, scope=ROOM)
async def unwatch(sv: Services, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    if ("watch", room) not in s.media:
        raise SoukError(Code.NOT_FOUND, "you are not watching this room")
    await _call(_relay(sv).unwatch(room, peer_id(s)))
    s.media.discard(("watch", room))
    return None


@op("ice", roles=VIEWERS, scope=ROOM, cost=0.25)
async def ice(sv: Services, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    if not any(r == room for _, r in s.media):
        raise SoukError(Code.NOT_FOUND, "publish or watch this room first")
    candidate = frame.get("candidate")
    if not isinstance(candidate, dict):
        raise SoukError(Code.INVALID, "candidate must be a map (RTCIceCandidateInit)")
    await _call(_relay(sv).add_ice(room, peer_id(s), candidate))
    return None


REWATCH = "rewatch"


def rewatch_notice(sessions: Iterable[Session]) -> Callable[[str, list[str]], None]:
    """What the relay calls when viewers lost their media (their media worker died and was
    restarted): each such connection gets ``{"op": "event", "ch": "room:<id>", "type":
    "rewatch", "room", "reason", "ts"}`` and is no longer counted as watching; the SDKs then
    watch again with a fresh offer (the relay has already forgotten the old peer)."""

    def notify(room: str, viewer_ids: list[str]) -> None:
        wanted = set(viewer_ids)
        for s in list(sessions):
            if s.identity is None or peer_id(s) not in wanted:
                continue
            s.media.discard(("watch", room))
            s.send({"op": "event", "ch": room_channel(room), "type": REWATCH, "room": room,
                    "reason": "media_worker_restarted", "ts": int(time.time() * 1000)})

    return notify
