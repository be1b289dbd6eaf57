"""WebRTC signalling ops on the same websocket: publish/unpublish, watch/unwatch, ice.

The media relay (media/) knows nothing of tokens or rooms' rules; these handlers check the
role and the room, name the peer after the user and the connection, and remember what the
connection holds so that a dropped websocket releases its media too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, room_channel
from media.errors import MediaError
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import STREAMERS, VIEWERS, Result, op

if TYPE_CHECKING:
    from server.app import App
    from server.session import Session


def _relay(app: App) -> Any:
    if app.media is None:
        raise SoukError(Code.UNAVAILABLE, "media is not enabled on this server")
    return app.media


def _room(s: Session, frame: Frame) -> str:
    assert s.identity is not None
    room = fields.ident(frame, "room")
    if not s.identity.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    return room


def peer_id(s: Session) -> str:
    assert s.identity is not None
    return f"{s.identity.id}#{s.id}"


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except MediaError as err:
        raise SoukError(err.code, err.message) from None


@op("publish", roles=STREAMERS, cost=2)
async def publish(app: App, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    result = await _call(_relay(app).publish(room, peer_id(s), frame.get("sdp")))
    s.media.add(("publish", room))
    if app.cascade is not None:  # cluster: this node is the room's media origin now
        await app.cascade.advertise(room)
    return dict(result)


@op("unpublish", roles=STREAMERS)
async def unpublish(app: App, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    await _call(_relay(app).unpublish(room))
    s.media.discard(("publish", room))
    if app.cascade is not None:
        await app.cascade.withdraw(room)
    return None


@op("watch", roles=VIEWERS, cost=2)
async def watch(app: App, s: Session, frame: Frame) -> Result:
    """Watch a room. In a cluster, a room published on another node is pulled from there
    first (once per room per node). ``local: true`` (what an edge sends its origin) asks for
    a local publisher only, so a pull never cascades on: no loops between nodes."""
    arrived = time.monotonic()  # the relay measures watch-to-first-keyframe from here
    room = _room(s, frame)
    local = frame.get("local", False)
    if not isinstance(local, bool):
        raise SoukError(Code.INVALID, "local must be a boolean")
    relay = _relay(app)
    if app.cascade is not None and not local:
        await _call(app.cascade.ensure_pull(room))
    result = await _call(
        relay.watch(room, peer_id(s), frame.get("sdp"), edge=local, arrived=arrived)
    )
    s.media.add(("watch", room))
    return dict(result)


@op("unwatch", roles=VIEWERS)
async def unwatch(app: App, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    if ("watch", room) not in s.media:
        raise SoukError(Code.NOT_FOUND, "you are not watching this room")
    await _call(_relay(app).unwatch(room, peer_id(s)))
    s.media.discard(("watch", room))
    return None


@op("ice", roles=VIEWERS, cost=0.25)
async def ice(app: App, s: Session, frame: Frame) -> Result:
    room = _room(s, frame)
    if not any(r == room for _, r in s.media):
        raise SoukError(Code.NOT_FOUND, "publish or watch this room first")
    candidate = frame.get("candidate")
    if not isinstance(candidate, dict):
        raise SoukError(Code.INVALID, "candidate must be a map (RTCIceCandidateInit)")
    await _call(_relay(app).add_ice(room, peer_id(s), candidate))
    return None


REWATCH = "rewatch"


def rewatch_notice(app: App) -> Callable[[str, list[str]], None]:
    """What the relay calls when viewers lost their media (their media worker died and was
    restarted): each such connection gets ``{"op": "event", "ch": "room:<id>", "type":
    "rewatch", "room", "reason", "ts"}`` and is no longer counted as watching; the SDKs then
    watch again with a fresh offer (the relay has already forgotten the old peer)."""

    def notify(room: str, viewer_ids: list[str]) -> None:
        wanted = set(viewer_ids)
        for s in list(app.sessions):
            if s.identity is None or peer_id(s) not in wanted:
                continue
            s.media.discard(("watch", room))
            s.send({"op": "event", "ch": room_channel(room), "type": REWATCH, "room": room,
                    "reason": "media_worker_restarted", "ts": int(time.time() * 1000)})

    return notify


def refresh_metrics(app: App) -> None:
    """Copy the relay's counters (and the cascade's) into Prometheus, and record the
    watch-to-first-keyframe delays measured since the last scrape."""
    if app.media is None:
        return
    for key, value in app.media.stats().items():
        app.metrics.media_children(key).set(value)
    for ms in app.media.first_keyframe_samples():
        app.metrics.media_first_keyframe.observe(ms / 1000)
    if app.cascade is not None:
        app.metrics.media_children("edge_pulls_started_total").set(app.cascade.pulls_started)
        app.metrics.media_children("edge_pulls_ended_total").set(app.cascade.pulls_ended)
