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
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from websockets.asyncio.server import Server

from client_sdk.protocol import Close
from server import api, demo
from server.bus.local import LocalBus
from server.bus.redis import RedisBus
from server.channels import Channels
from server.commerce import Commerce, wall_ms
from server.community import Community
from server.community_sync import ClusterSync
from server.config import Config
from server.domain.events import RoomSaved
from server.domain.ratelimit import UserBuckets
from server.domain.room import Room
from server.events import EventDispatcher
from server.fanout import Hub
from server.gateway import Gateway
from server.http import HttpRoutes, bearer
from server.listener import advertise_url, listen, port_of
from server.metrics import Metrics
from server.operations import Operations
from server.ops import media as media_ops
from server.presence import ClusterPresence
from server.reactions import Reactions
from server.replica import RoomReplica
from server.room_record import RoomRecord
from server.rooms import Rooms
from server.sanctions import PgSanctions, Sanctions, SanctionStore, SqliteSanctions
from server.services import Services
from server.session import Session
from server.store.community_pg import PgCommunityStore
from server.store.metrics_pg import PgMetricsStore
from server.store.operations_pg import PgOperationsStore
from server.store.postgres import PostgresLedger, StockGate
from server.store.sqlite import SqliteDatabase

if TYPE_CHECKING:
    from media.relay import MediaRelay
    from server.cascade import MediaCascade

log = logging.getLogger("souk.app")


async def _quietly(step: Awaitable[object] | None) -> None:
    """Shutdown goes on whatever one part does: each is stopped, a failure only noted."""
    if step is not None:
        try:
            await step
        except Exception:
            log.debug("a part failed to stop", exc_info=True)


def node_unique_ids(room: Room) -> None:
    """In a cluster each node numbers chat messages; start each node's numbering at a random
    point so ids from two nodes do not collide (delete_message names one)."""
    room.next_msg = secrets.randbelow(2**40) * 1000 + 1


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
        self.rooms = Rooms(self.bus, likes_interval_s=cfg.likes_interval_s,
                           viewers_interval_s=cfg.viewers_interval_s,
                           on_create=node_unique_ids if cfg.redis else None)
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
        self.gateway = Gateway(self)
        self.http = HttpRoutes(self)
        self.draining = False
        self.server: Server | None = None
        self.worker_server: Server | None = None  # --workers: this worker's own port (media)
        self.media: MediaRelay | None = None
        self.cascade: MediaCascade | None = None  # cluster mode only
        self.node_id = secrets.token_hex(6)
        self._open_stores()
        self._wire()

    def _open_stores(self) -> None:
        """The backends, chosen once: embedded SQLite, or PostgreSQL (+ the Redis stock gate
        and change notices) in a cluster; then the features over them."""
        cfg = self.cfg
        self.db = SqliteDatabase(cfg.db_path)
        self.room_record = RoomRecord(self.db)
        # bans and mutes: recorded before they are announced, loaded before a join passes
        sanction_store: SanctionStore = (PgSanctions(cfg.postgres) if cfg.postgres
                                         else SqliteSanctions(self.db))
        bus = self.bus
        self.sanctions = Sanctions(
            sanction_store, self.rooms, self.clock_ms,
            receiving=(lambda ch: ch in bus.watched) if isinstance(bus, RedisBus) else None)
        pg, redis = cfg.postgres, self.redis
        # cluster mode: community state shared in PostgreSQL, nodes' copies kept in step by
        # change notices over Redis (server/community_sync.py)
        self.community = Community(
            self.db, self.bus, self.clock_ms, answer_target_s=cfg.answer_target_s,
            webhook_host=cfg.host, webhook_port=cfg.webhook_port or None,
            store=PgCommunityStore(pg) if pg else None,
            sync=ClusterSync(redis, cfg.redis_prefix) if pg and redis else None)
        if pg and redis is not None:  # the numbers read the same pool as the writes
            ops_store = PgOperationsStore(pg)
            self.operations = Operations(
                self.db, self.bus, self.clock_ms, store=ops_store,
                metrics=PgMetricsStore(ops_store),
                sync=ClusterSync(redis, cfg.redis_prefix, channel="__operations__"))
        else:
            self.operations = Operations(self.db, self.bus, self.clock_ms)
        self.ledger = PostgresLedger(pg, StockGate(redis, cfg.redis_prefix)) if pg and redis else None
        self.commerce = Commerce(
            self.ledger or self.db, self.bus, self.clock_ms, announce=self.events.emit,
            coupons=self.operations.coupons, find_coupon=self.operations.find_coupon)

    def _wire(self) -> None:
        """What the features see of each other: reactions to domain events, the parts of a
        channel's snapshot, the ops' services and the HTTP routes."""
        Reactions(self.commerce, self.community, self.operations, self.rooms,
                  lambda: self.media).wire(self.events)
        self.channels.before_snapshot("room", self.commerce.sync_room)  # cluster: others' sales
        self.channels.follow_remote(self.commerce.on_remote)  # cluster: others' stock and teams
        self.channels.add_snapshot_part("room", self.commerce.room_snapshot)
        self.channels.add_snapshot_part("room", self.community.room_snapshot)
        self.channels.add_snapshot_part("group", self.community.group_snapshot)
        self.services = Services(
            secret=self.cfg.secret, max_channels=self.cfg.max_channels, clock_ms=self.clock_ms,
            bus=self.bus, hub=self.hub, rooms=self.rooms, channels=self.channels,
            sanctions=self.sanctions, events=self.events,
            chat_buckets=UserBuckets(self.cfg.chat_per_s, self.cfg.chat_burst),
            commerce=self.commerce, community=self.community, operations=self.operations,
            save_room=self.save_room)
        api.install(self.http.api, self.services, lambda request, query: bearer(self, request, query))
        self.page_for = api.page_for

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.db.start()
        await self.bus.start()
        await self.sanctions.store.start()
        self.room_record.load_into(self.rooms)
        await self.community.start()
        await self.commerce.start()
        if self.ledger is not None:
            # orders live in PostgreSQL; the embedded ledger's tables still exist (empty) for
            # the node-local SQLite readers (the operations and their numbers read PostgreSQL)
            from server.store.ledger import SqliteLedger

            await SqliteLedger(self.db).migrate()
        await self.operations.start()  # after both: it reads their tables
        from media.relay import MediaRelay  # aiortc: imported once the server really starts

        self.media = self.services.media = MediaRelay(
            rtc_host=self.cfg.rtc_host, stun_urls=tuple(self.cfg.stun_url or ()),
            turn_urls=tuple(self.cfg.turn_url or ()), turn_secret=self.cfg.turn_secret or None,
        )
        self.rooms.start()
        if self.presence is not None:
            await self.presence.start()
        if self.cfg.demo:
            await demo.seed(self.rooms, self.commerce, self.community, self.save_room, self.clock_ms)
        self.server = await listen(self.cfg, self.gateway.handle, self.http, self.cfg.port,
                                   reuse_port=self.cfg.workers > 1)
        self.cfg.port = port_of(self.server)
        if self.redis is not None:  # after the bind: the advertised URL needs the real port
            from server.cascade import MediaCascade

            if self.cfg.workers > 1:
                # workers share the port, and the kernel picks the worker of each connection:
                # an edge must reach *this* worker, so it gets a private port of its own
                self.worker_server = await listen(self.cfg, self.gateway.handle, self.http, 0,
                                                  reuse_port=False)
            self.cascade = self.services.cascade = MediaCascade(
                self.media, self.redis, advertise_url=advertise_url(self.cfg, self.worker_server),
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
        await self.rooms.stop()
        if self.presence is not None:
            await self.presence.stop()
        await self.events.drain()
        await _quietly(self.cascade.stop() if self.cascade is not None else None)
        await _quietly(self.media.close() if self.media is not None else None)
        for feature in (self.operations, self.community, self.commerce):
            await _quietly(feature.stop())
        for server in (self.server, self.worker_server):
            if server is not None:
                server.close()
                await _quietly(asyncio.wait_for(server.wait_closed(), 2))
        await self.bus.stop()
        await _quietly(self.sanctions.store.close())
        await _quietly(self.ledger.close() if self.ledger is not None else None)
        await _quietly(self.redis.aclose() if self.redis is not None else None)
        await self.db.close()

    # ---- connections (server/gateway.py) --------------------------------------------
    async def save_room(self, room: Room) -> None:
        await self.room_record.save(room)
        self.events.emit(RoomSaved(room.id, room.shop))

    async def disconnect(self, s: Session) -> None:
        self.channels.leave_all(s)
        await media_ops.release(self.services, s)

    def demo_token(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return demo.demo_token(self.cfg.secret, query, len(self.sessions))

    def refresh_metrics(self) -> None:
        cascade = self.cascade
        self.metrics.refresh(self.hub.stats, len(self.rooms.by_channel),
                             self.media.stats() if self.media is not None else None,
                             (cascade.pulls_started, cascade.pulls_ended) if cascade is not None else None)
