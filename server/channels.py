"""Channels: who is subscribed to what, and the snapshot a channel is joined with.

Why a module of its own: subscribing touches the hub (this process's fan-out), the bus (in a
cluster, whether this node follows the channel at all), the room's presence count and the
other features (a viewer entering a room counts in the merchant's numbers); leaving, a ban,
a slow consumer's eviction and a dropped connection must undo exactly that. One owner keeps
the two directions symmetric.

The snapshot is assembled from parts the features register at wiring time (the room itself,
then commerce's sales and offers, the community's questions or group history), so this module
knows no feature; in a cluster the counts come from the cluster-wide presence, and the events
other nodes publish on a followed channel go to the followers registered the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Close
from server.domain.events import RoomJoined, RoomLeft
from server.events import EventDispatcher
from server.fanout import Hub
from server.metrics import Metrics
from server.rooms import Rooms

if TYPE_CHECKING:
    from server.cluster.presence import ClusterPresence
    from server.fanout import Event
    from server.services import Bus
    from server.session import Session

log = logging.getLogger("souk.channels")

SnapshotPart = Callable[[str], dict[str, Any]]
BeforeSnapshot = Callable[[str], Awaitable[None]]
RemoteFollower = Callable[[str, "Event"], None]


class Channels:
    """Subscriptions of every connection of this process, and channel snapshots."""

    def __init__(
        self,
        hub: Hub,
        bus: Bus,
        rooms: Rooms,
        sessions: set[Session],
        events: EventDispatcher,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        presence: ClusterPresence | None = None,
    ) -> None:
        self.hub = hub
        self.bus = bus
        self.rooms = rooms
        self.sessions = sessions
        self.events = events
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.presence = presence
        self._parts: dict[str, list[SnapshotPart]] = {}
        self._before: dict[str, list[BeforeSnapshot]] = {}
        self._followers: list[RemoteFollower] = []

    # ---- wiring -----------------------------------------------------------------------
    def add_snapshot_part(self, kind: str, part: SnapshotPart) -> None:
        """`part(key)` adds its fields to the snapshot of every `kind:<key>` channel, in the
        order parts were added."""
        self._parts.setdefault(kind, []).append(part)

    def before_snapshot(self, kind: str, step: BeforeSnapshot) -> None:
        """`await step(key)` runs before a `kind:<key>` snapshot is labelled (in a cluster:
        adopt what other nodes created, so the snapshot holds it)."""
        self._before.setdefault(kind, []).append(step)

    def follow_remote(self, follower: RemoteFollower) -> None:
        """In a cluster: `follower(ch, event)` sees every event another node published on a
        channel this node follows (its rooms, its sales), in the order added."""
        self._followers.append(follower)

    def remote_event(self, ch: str, event: Event) -> None:
        """The cluster bus's hook: one follower that fails does not stop the others."""
        for follower in self._followers:
            try:
                follower(ch, event)
            except Exception:
                log.exception("could not follow a remote event on %s", ch)

    # ---- subscriptions ----------------------------------------------------------------
    def subscribe(self, s: Session, ch: str) -> None:
        s.channels.add(ch)
        if not s.closing:  # a closing connection gets no more frames (its close frame is out)
            self.hub.subscribe(ch, s)
        self.bus.watch(ch)
        if ch.startswith("room:") and s.identity is not None:
            self.events.emit(RoomJoined(ch[5:], s.identity.id, s.identity.role))

    def unsubscribe(self, s: Session, ch: str) -> None:
        s.channels.discard(ch)
        self.hub.unsubscribe(ch, s)
        if not self.hub.has_subscribers(ch):
            self.bus.unwatch(ch)

    def leave(self, s: Session, ch: str) -> None:
        if ch not in s.channels:
            return
        self.unsubscribe(s, ch)
        if ch.startswith("room:") and s.identity is not None:
            self.events.emit(RoomLeft(ch[5:], s.identity.id))
        room = self.rooms.get(ch)
        if room is not None and s.identity is not None:
            room.exit(s.identity.id)
            self.rooms.dirty_viewers.add(ch)

    def leave_all(self, s: Session) -> None:
        for ch in list(s.channels):
            self.leave(s, ch)

    def expel(self, user_id: str, ch: str) -> None:
        """Take a banned or removed user out of a channel on every connection it has."""
        self.hub.flush(ch)  # the `banned` event reaches them before they go
        for s in list(self.sessions):
            if s.identity is not None and s.identity.id == user_id and ch in s.channels:
                self.leave(s, ch)
                s.send({"op": "event", "ch": ch, "type": "expelled", "ts": self.clock_ms()})

    def evict(self, s: Session) -> None:
        """A slow consumer past its bound: out of every channel now (presence included)."""
        self.metrics.closed.labels(str(Close.SLOW_CONSUMER)).inc()
        self.leave_all(s)

    # ---- snapshots --------------------------------------------------------------------
    async def snapshot(self, ch: str) -> dict[str, Any]:
        kind, _, key = ch.partition(":")
        for step in self._before.get(kind, ()):
            await step(key)
        # then: in a cluster this may wait until the node receives the channel (and has
        # caught up with other nodes' recent events); everything below is read without a
        # pause, so the state and the seq match
        epoch, seq = await self.bus.head(ch)
        return self.snapshot_at(ch, epoch, seq)

    def snapshot_at(self, ch: str, epoch: str, seq: int) -> dict[str, Any]:
        """The snapshot of `ch` as this node holds it, labelled with (epoch, seq): no await,
        so nothing can slip in between the state and its label (also used by the cluster bus
        for the `resync` it pushes when Redis lost a channel's history)."""
        kind, _, key = ch.partition(":")
        snap: dict[str, Any] = {}
        room = self.rooms.get(ch)
        if room is not None:
            snap.update(room.snapshot())
        for part in self._parts.get(kind, ()):
            snap.update(part(key))
        if self.presence is not None and room is not None:
            snap["viewers"] = self.presence.total(ch)
            snap["likes"] = self.presence.likes_total(ch)
        snap["epoch"] = epoch
        snap["seq"] = seq
        return snap
