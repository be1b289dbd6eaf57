"""What an op handler may use: a narrow, fully typed set of services, not the whole App.

Why: a handler that receives the App can reach anything (the listening sockets, the drain,
the stores' pools), and what it really depends on is invisible. Handlers get this object
instead; every attribute is typed, so mypy checks each use. The parts that are optional or
heavy at import time (the media relay pulls in aiortc; the cascade exists only in a cluster)
are described by the Protocols below, the few calls the ops make, so the ops import neither.

The App builds one `Services` at wiring time (server/app.py) and fills `media` and `cascade`
when it starts them; nothing else changes it afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from server.auth import VerifiedTokens

if TYPE_CHECKING:
    from server.channels import Channels
    from server.commerce import Commerce
    from server.community import Community
    from server.domain.ratelimit import UserBuckets
    from server.domain.room import Room
    from server.engagement import Engagement
    from server.engagement.draws import Draws
    from server.events import EventDispatcher
    from server.fanout import Event, Hub
    from server.images import Images
    from server.insights import Insights
    from server.replays import Replays
    from server.rooms import Rooms
    from server.sanctions import Sanctions


class Bus(Protocol):
    """The bus as ops and channels use it (server/bus/: LocalBus or RedisBus, one chosen at
    start-up): publish to a channel, read its head and history, follow it."""

    def publish(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> object: ...

    async def head(self, ch: str) -> tuple[str, int]: ...

    async def since(self, ch: str, seq: int, epoch: str | None) -> list[Event] | None: ...

    def watch(self, ch: str) -> None: ...

    def unwatch(self, ch: str) -> None: ...

    def forget(self, ch: str) -> None: ...

    def forget_idle(self, prefix: str, before_ms: int, subscribed: Callable[[str], bool]) -> int: ...


class Relay(Protocol):
    """The media relay's signalling calls (media/relay.py `MediaRelay`)."""

    async def publish(self, room: str, publisher_id: str, offer_sdp: str) -> dict[str, Any]: ...

    async def unpublish(self, room: str) -> None: ...

    async def watch(
        self, room: str, viewer_id: str, offer_sdp: str, *, edge: bool = False,
        arrived: float | None = None,
    ) -> dict[str, Any]: ...

    async def unwatch(self, room: str, viewer_id: str) -> None: ...

    async def add_ice(self, room: str, peer_id: str, candidate: dict[str, Any]) -> None: ...

    async def close_room(self, room: str) -> None: ...

    def publishing(self, room: str) -> bool: ...


class Cascade(Protocol):
    """The cluster's media origin claims and edge pulls (server/cluster/cascade.py `MediaCascade`)."""

    async def advertise(self, room: str) -> None: ...

    async def withdraw(self, room: str) -> None: ...

    async def ensure_pull(self, room: str) -> None: ...


@dataclass
class Services:
    """Everything an op handler may touch, each part typed.

    `secret` verifies tokens (auth); `max_channels` bounds one connection's subscriptions;
    `save_room` writes a room's title, shop, state and pin.
    """

    secret: str
    max_channels: int
    clock_ms: Callable[[], int]
    bus: Bus
    hub: Hub
    rooms: Rooms
    channels: Channels
    sanctions: Sanctions
    events: EventDispatcher
    chat_buckets: UserBuckets
    commerce: Commerce
    community: Community
    engagement: Engagement
    insights: Insights
    draws: Draws
    save_room: Callable[[Room], Awaitable[None]]
    images: Images | None = None  # uploaded product pictures (None: uploads refused)
    media: Relay | None = None
    cascade: Cascade | None = None
    replays: Replays | None = None
    max_token_ttl: int = 7 * 24 * 3600  # auth: an exp further ahead is refused (server/auth.py)
    resume_limit: int = 256 * 1024  # resume: missed events past this get a resync instead
    tokens: VerifiedTokens = field(init=False)  # auth: verified tokens remembered until exp

    def __post_init__(self) -> None:
        self.tokens = VerifiedTokens(self.secret, max_ttl_s=self.max_token_ttl)
