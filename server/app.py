"""The composition root: builds every part of one server process once, wires them, runs them.

Nothing here decides anything about a room, a sale or a group. `App` chooses the backends
(embedded or cluster) from the config, hands each feature what it needs, subscribes the
cross-feature reactions (server/reactions.py) and the snapshot parts, gives the op handlers
their `Services` (server/services.py), and owns the order in which things start and stop.
Its jobs elsewhere: channels (server/channels.py), the HTTP API (server/api.py), the demo
(server/demo.py). The map of the parts is docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from client_sdk.protocol import Close
from server import api, demo
from server.bus.local import LocalBus
from server.bus.redis import RedisBus
from server.channels import Channels
from server.cluster.presence import ClusterPresence
from server.cluster.replica import RoomReplica, node_unique_ids
from server.collector import Collector
from server.commerce import Commerce, wall_ms
from server.community import Community
from server.config import Config
from server.domain.ratelimit import UserBuckets
from server.domain.room import Room
from server.engagement import Engagement
from server.engagement.draws import Draws
from server.events import EventDispatcher
from server.fanout import Hub
from server.gateway import Gateway
from server.http import HttpRoutes, bearer
from server.images import Images
from server.insights import Insights
from server.listener import Listener, listen, port_of
from server.metrics import Metrics
from server.ops import media as media_ops
from server.periodic import every, watch_lag
from server.reactions import Reactions
from server.replays import Replays
from server.rooms import Rooms
from server.sanctions import Sanctions
from server.services import Services
from server.session import Session
from server.store.stores import open_stores

if TYPE_CHECKING:
    from media.relay import MediaRelay
    from server.cluster.cascade import MediaCascade

log = logging.getLogger("souk.app")


async def _quietly(step: Awaitable[object] | None) -> None:
    """Shutdown goes on whatever one part does: each is stopped, a failure only noted."""
    if step is not None:
        try:
            await step
        except Exception:
            log.debug("a part failed to stop", exc_info=True)


class App:
    """One server process: its parts, built in __init__, started by `start`, stopped by
    `stop` (or `drain` on SIGTERM)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clock_ms = wall_ms  # the protocol's time: ms since the epoch
        self.metrics = Metrics()
        self.hub = Hub(tick_s=cfg.tick_ms / 1000, soft_limit=cfg.soft_limit, hard_limit=cfg.hard_limit)
        cfg.check_backends()
        self.redis: Redis | None = Redis.from_url(cfg.redis) if cfg.redis else None
        self.bus: LocalBus | RedisBus
        if self.redis is not None:
            self.bus = RedisBus(self.hub, self.clock_ms, self.redis, prefix=cfg.redis_prefix,
                                history=cfg.history,
                                shards=[Redis.from_url(url) for url in cfg.redis_shard])
        else:
            self.bus = LocalBus(self.hub, self.clock_ms, history=cfg.history)
        # every store, on the database the configuration chose (server/store/stores.py)
        self.stores = open_stores(cfg, self.redis)
        bus = self.bus
        self.rooms = Rooms(self.bus, store=self.stores.rooms, sanctions=self.stores.sanctions,
                           clock_ms=self.clock_ms,
                           receiving=(lambda ch: ch in bus.watched) if isinstance(bus, RedisBus) else None,
                           likes_interval_s=cfg.likes_interval_s,
                           viewers_interval_s=cfg.viewers_interval_s,
                           on_create=node_unique_ids if cfg.redis else None,
                           chat=self.stores.chat)
        self.presence: ClusterPresence | None = None
        if self.redis is not None:  # the counts are the cluster's, summed in Redis
            self.rooms.count_viewers = False
            self.rooms.count_likes = False
            self.presence = ClusterPresence(
                self.redis, self.rooms.by_channel, self.bus, prefix=cfg.redis_prefix,
                interval_s=cfg.viewers_interval_s, watched=self.hub.has_subscribers)
        self.sessions: set[Session] = set()
        self.events = EventDispatcher()
        self.channels = Channels(self.hub, self.bus, self.rooms, self.sessions, self.events,
                                 self.metrics, self.clock_ms, self.presence)
        self.evict = self.channels.evict  # a slow consumer (server/session.py)
        self.replica: RoomReplica | None = None
        if isinstance(self.bus, RedisBus):
            self.replica = RoomReplica(self.rooms.get, self.channels.expel)
            self.bus.on_remote = self.channels.remote_event
            self.channels.follow_remote(self.replica.apply)
            self.bus.snapshot_of = self.channels.snapshot_at
        self.collector = Collector(
            self.rooms, subscribed=self.hub.has_subscribers, forget_channel=self.bus.forget,
            forget_idle=self.bus.forget_idle, busy=self._busy_rooms, clock_ms=self.clock_ms,
            grace_s=cfg.room_grace_s, forget_rows=lambda rooms: self.insights.forget_rooms(rooms))
        self._collecting: asyncio.Task[None] | None = None
        self.gateway = Gateway(self)
        self.http = HttpRoutes(self)
        self.images = Images(self.stores.images, cfg.data_dir / "images", wall_ms)
        self.draining = False
        self.server: Listener | None = None
        self.worker_server: Listener | None = None  # --workers: this worker's own port (media)
        self.media: MediaRelay | None = None
        self.cascade: MediaCascade | None = None  # cluster mode only
        self.node_id = secrets.token_hex(6)
        self._open_stores()
        self._wire()

    def _open_stores(self) -> None:
        """The features over the stores `open_stores` chose (embedded SQLite, or PostgreSQL
        with the Redis stock gate and, for the working copies, change notices over Redis)."""
        cfg, stores = self.cfg, self.stores
        # bans and mutes: recorded before they are announced, loaded before a join passes
        self.sanctions = Sanctions(stores.sanctions, self.clock_ms)
        self.community = Community(
            stores.community, self.bus, self.clock_ms, answer_target_s=cfg.answer_target_s,
            webhook_host=cfg.host, webhook_port=cfg.webhook_port or None,
            allow_private_webhooks=cfg.allow_private_webhooks,
            sync=stores.community_sync)
        self.insights = Insights(stores.insights, self.clock_ms, sync=stores.insights_sync)
        self.engagement = Engagement(stores.engagement, self.insights, self.bus, self.clock_ms,
                                     sync=stores.engagement_sync)
        self.commerce = Commerce(
            stores.ledger, self.bus, self.clock_ms, announce=self.events.emit,
            coupons=self.engagement.coupons, find_coupon=self.engagement.find_coupon)
        beacon = None
        if cfg.draw_beacon_url:  # aiohttp's client is imported only when a beacon is set
            from server.engagement.beacon import HttpBeacon

            beacon = HttpBeacon(cfg.draw_beacon_url)
        self.draws = Draws(
            stores.draws, self.bus, self.clock_ms, member_of=self.community.is_member_fresh,
            banned=self._banned, viewers=self._viewers, hold_units=self.commerce.hold_units,
            release_units=self.commerce.release_units,
            coupons_issued=self.engagement.coupons_granted, beacon=beacon, sync=stores.draws_sync)
        self.replays = Replays(stores.replays, self.bus.publish, wall_ms, cfg.data_dir / "replays",
                               record_all=cfg.record, retention_days=cfg.replay_retention_days)
        self._background: list[asyncio.Task[None]] = []  # retention sweeps, the loop-lag probe

    def _banned(self, ch: str, user: str) -> bool:
        room = self.rooms.get(ch)
        return room is not None and user in room.banned

    def _viewers(self, ch: str) -> int:
        if self.presence is not None:
            return self.presence.total(ch)
        room = self.rooms.get(ch)
        return room.viewers if room is not None else 0

    def _wire(self) -> None:
        """What the features see of each other: reactions to domain events, the parts of a
        channel's snapshot, the ops' services and the HTTP routes."""
        Reactions(self.commerce, self.community, self.engagement, self.insights, self.rooms,
                  lambda: self.media, self.draws, self.replays).wire(self.events)
        self.channels.before_snapshot("room", self.commerce.sync_room)  # cluster: others' sales
        self.channels.follow_remote(self.commerce.on_remote)  # cluster: others' stock and teams
        self.channels.follow_remote(self.draws.on_remote)  # cluster: others' entrant counts
        self.channels.follow_remote(self.replays.on_remote)  # cluster: live/ended elsewhere
        self.channels.add_snapshot_part("room", self.commerce.room_snapshot)
        self.channels.add_snapshot_part("room", self.community.room_snapshot)
        self.channels.add_snapshot_part("group", self.community.group_snapshot)
        self.channels.add_snapshot_part("room", self.draws.snapshot("room"))
        self.channels.add_snapshot_part("group", self.draws.snapshot("group"))
        self.services = Services(
            secret=self.cfg.secret, max_channels=self.cfg.max_channels, clock_ms=self.clock_ms,
            bus=self.bus, hub=self.hub, rooms=self.rooms, channels=self.channels,
            sanctions=self.sanctions, events=self.events,
            chat_buckets=UserBuckets(self.cfg.chat_per_s, self.cfg.chat_burst),
            commerce=self.commerce, community=self.community, engagement=self.engagement,
            insights=self.insights, draws=self.draws, replays=self.replays,
            save_room=self.save_room, images=self.images, max_token_ttl=self.cfg.max_token_ttl,
            resume_limit=self.cfg.soft_limit)
        api.install(self.http.api, self.services, lambda request, query: bearer(self, request, query),
                    add=self.http.add)
        self.page_for = api.page_for

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await self.stores.start()  # opens the database and brings its schema up to date
        await self.bus.start()
        await self.rooms.load()
        await self.community.start()
        await self.commerce.start()
        await self.engagement.start()
        await self.insights.start()
        await self.draws.start()
        from media.relay import MediaRelay  # aiortc: imported once the server really starts

        self.media = self.services.media = MediaRelay(
            rtc_host=self.cfg.rtc_host, stun_urls=tuple(self.cfg.stun_url or ()),
            turn_urls=tuple(self.cfg.turn_url or ()), turn_secret=self.cfg.turn_secret or None,
            media_workers=self.cfg.media_workers, on_rewatch=media_ops.rewatch_notice(self.sessions),
        )
        self.rooms.video_counts = self.media.video_viewers
        self.replays.attach(self.media)
        await self.replays.start()
        if self.cfg.replay_retention_days > 0:
            self._background.append(asyncio.create_task(
                every(3600.0, self.replays.expire, "replay retention", log)))
        if self.cfg.chat_retention_days > 0 and (chat := self.rooms.chat_log) is not None:
            keep_ms = int(self.cfg.chat_retention_days * 86_400_000)
            self._background.append(asyncio.create_task(every(
                3600.0, lambda: chat.expire(wall_ms() - keep_ms), "chat retention", log, first=True)))
        self.rooms.start()
        self._background.append(asyncio.create_task(watch_lag(self.metrics.loop_lag.observe)))
        self._collecting = asyncio.create_task(every(
            self.collector.interval_s(), self.collector.sweep, "room collection", log))
        if self.presence is not None:
            await self.presence.start()
        if self.cfg.demo:
            await demo.seed(self.rooms, self.commerce, self.community, self.save_room, self.clock_ms)
        self.server = await listen(self, self.cfg.port, reuse_port=self.cfg.workers > 1)
        self.cfg.port = port_of(self.server)
        if self.redis is not None:  # after the bind: the advertised URL needs the real port
            from server.cluster.cascade import MediaCascade, advertise_url

            if self.cfg.workers > 1:
                # workers share the port, and the kernel picks the worker of each connection:
                # an edge must reach *this* worker, so it gets a private port of its own
                self.worker_server = await listen(self, 0, reuse_port=False)
            self.cascade = self.services.cascade = MediaCascade(
                self.media, self.redis, advertise_url=advertise_url(
                    self.cfg, port_of(self.worker_server) if self.worker_server is not None else None),
                secret=self.cfg.secret, node_id=self.node_id, prefix=self.cfg.redis_prefix,
                grace_s=self.cfg.edge_grace_s,
            )
            await self.cascade.start()

    async def drain(self) -> None:
        """SIGTERM: refuse new clients, tell connected ones to go elsewhere (1012), flush."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"connections": len(self.sessions)})
        for server in (self.server, self.worker_server):
            if server is not None:
                server.close(close_connections=False)
        for s in list(self.sessions):
            s.close(Close.RESTARTING, "server restarting: reconnect and resume")
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()

    async def stop(self) -> None:
        if self._collecting is not None:
            self._collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collecting
            self._collecting = None
        await self.rooms.stop()
        if self.presence is not None:
            await self.presence.stop()
        await self.events.drain()
        await _quietly(self.cascade.stop() if self.cascade is not None else None)
        for task in self._background:
            task.cancel()
        await _quietly(self.replays.stop())  # files closed before the relay goes
        await _quietly(self.media.close() if self.media is not None else None)
        for feature in (self.draws, self.insights, self.engagement, self.community, self.commerce):
            await _quietly(feature.stop())
        for server in (self.server, self.worker_server):
            if server is not None:
                server.close()
                await _quietly(asyncio.wait_for(server.wait_closed(), 2))
        await self.bus.stop()
        await _quietly(self.stores.close())
        await _quietly(self.redis.aclose() if self.redis is not None else None)

    def _busy_rooms(self) -> set[str]:
        """Rooms something names (a sale, a team buy, a question, a draw): never freed."""
        busy = {sale.room for sale in self.commerce.sales.values()}
        busy.update(offer.room for offer in self.commerce.offers.values())
        busy.update(self.community.boards)
        busy.update(ch[5:] for ch in self.draws.of_channel if ch.startswith("room:"))
        return busy

    # ---- connections (server/gateway.py) --------------------------------------------
    async def save_room(self, room: Room) -> None:
        await self.rooms.save(room)  # the numbers read a room's shop from its row

    async def disconnect(self, s: Session) -> None:
        self.channels.leave_all(s)
        await media_ops.release(self.services, s)

    def demo_token(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return demo.demo_token(self.cfg.secret, query, len(self.sessions))

    def refresh_metrics(self) -> None:
        cascade = self.cascade
        self.metrics.refresh(self.hub.stats, len(self.rooms.by_channel),
                             self.media.stats() if self.media is not None else None,
                             (cascade.pulls_started, cascade.pulls_ended) if cascade is not None else None,
                             self.media.first_keyframe_samples() if self.media is not None else ())
