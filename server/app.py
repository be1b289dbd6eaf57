"""Wiring: one App holds the config, the bus, the hub, the rooms and the feature services.

The App is the only object that knows every part; ops and HTTP routes reach features through
it. Features that are optional at run time (media, connectors) are plain attributes that
may be None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sqlite3
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.http11 import Request, Response

from client_sdk.protocol import Close, Code, Role, room_channel
from client_sdk.tokens import mint_token
from server.auth import Identity
from server.bus.local import LocalBus
from server.bus.redis import RedisBus
from server.community_sync import ClusterSync
from server.config import Config
from server.domain.ratelimit import UserBuckets
from server.domain.room import Room
from server.errors import SoukError
from server.fanout import Hub
from server.gateway import Gateway
from server.http import HttpRoutes, bearer, json_response
from server.listener import Listener
from server.metrics import Metrics
from server.ops import fields
from server.ops import media as media_ops
from server.presence import ClusterPresence
from server.replica import RoomReplica
from server.rooms import Rooms
from server.sanctions import PgSanctions, Sanctions, SanctionStore, SqliteSanctions
from server.session import Session
from server.store.base import CommerceStore
from server.store.community_pg import PgCommunityStore
from server.store.postgres import PostgresLedger, StockGate
from server.store.sqlite import SqliteDatabase

log = logging.getLogger("souk.app")

ROOMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    shop TEXT NOT NULL DEFAULT 'default',
    state TEXT NOT NULL DEFAULT 'idle',
    pinned TEXT
);
"""

PAGES = {"studio": "studio.html", "live": "live.html", "group": "group.html", "dashboard": "dashboard.html"}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clock_ms = wall_ms
        self.metrics = Metrics()
        self.hub = Hub(tick_s=cfg.tick_ms / 1000, soft_limit=cfg.soft_limit, hard_limit=cfg.hard_limit)
        self.bus: LocalBus | RedisBus
        if cfg.redis_shard and not cfg.redis:
            raise SystemExit("souk: --redis-shard needs --redis (the first shard)")
        if cfg.redis:
            self.redis: Redis | None = Redis.from_url(cfg.redis)
            self.bus = RedisBus(self.hub, self.clock_ms, self.redis, prefix=cfg.redis_prefix,
                                history=cfg.history,
                                shards=[Redis.from_url(url) for url in cfg.redis_shard])
        else:
            self.redis = None
            self.bus = LocalBus(self.hub, self.clock_ms, history=cfg.history)
        self.rooms = Rooms(self.bus, likes_interval_s=cfg.likes_interval_s,
                           viewers_interval_s=cfg.viewers_interval_s,
                           on_create=self._node_unique_ids if cfg.redis else None)
        self.presence: ClusterPresence | None = None
        self.replica: RoomReplica | None = None
        if isinstance(self.bus, RedisBus):
            self.replica = RoomReplica(self.rooms.get, self.expel)
            self.bus.on_remote = self._on_remote
            self.bus.snapshot_of = self.snapshot_at
        if self.redis is not None:
            self.rooms.count_viewers = False
            self.rooms.count_likes = False
            self.presence = ClusterPresence(
                self.redis, self.rooms.by_channel, self.bus, prefix=cfg.redis_prefix,
                interval_s=cfg.viewers_interval_s, watched=self.hub.has_subscribers)
        self.sessions: set[Session] = set()
        self.chat_buckets = UserBuckets(cfg.chat_per_s, cfg.chat_burst)
        self.gateway = Gateway(self)
        self.http = HttpRoutes(self)
        self.db = SqliteDatabase(cfg.db_path)
        self.db.add_schema(ROOMS_SCHEMA)
        # bans and mutes: recorded before they are announced, loaded before a join passes
        sanction_store: SanctionStore = (PgSanctions(cfg.postgres) if cfg.postgres
                                         else SqliteSanctions(self.db))
        bus = self.bus
        self.sanctions = Sanctions(
            sanction_store, self.rooms, self.clock_ms,
            receiving=(lambda ch: ch in bus.watched) if isinstance(bus, RedisBus) else None)
        self.draining = False
        self._announced: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.server: Listener | None = None
        self.worker_server: Listener | None = None  # --workers: this worker's own port (media)
        self.media: Any = None
        self.cascade: Any = None  # MediaCascade in cluster mode (server/cascade.py)
        self.node_id = secrets.token_hex(6)
        from server.commerce import Commerce
        from server.community import Community

        self.ledger: PostgresLedger | None = None
        if cfg.postgres:
            if self.redis is None:
                raise SystemExit("souk: --postgres needs --redis (the stock gate lives there)")
            self.ledger = PostgresLedger(cfg.postgres, StockGate(self.redis, cfg.redis_prefix))
        store: CommerceStore | SqliteDatabase = self.db if self.ledger is None else self.ledger
        self.commerce = Commerce(store, self._commerce_publish, self.clock_ms)

        # cluster mode: community state shared in PostgreSQL, nodes' copies kept in step by
        # change notices over Redis (server/community_sync.py)
        community_store = PgCommunityStore(cfg.postgres) if cfg.postgres else None
        community_sync = ClusterSync(self.redis, cfg.redis_prefix) if cfg.postgres and self.redis else None
        self.community = Community(
            self.db, self.bus, self.clock_ms, answer_target_s=cfg.answer_target_s,
            webhook_host=cfg.host, webhook_port=cfg.webhook_port or None,
            store=community_store, sync=community_sync,
        )
        # operations (issue 10): coupons, polls, check-ins, invites, layers, the numbers
        from server.operations import Operations

        if cfg.postgres and self.redis is not None:
            # cluster mode: the operations' record and the numbers in PostgreSQL, the nodes'
            # copies kept in step by notices on their own topic (docs/scaleout.md)
            from server.store.metrics_pg import PgMetricsStore
            from server.store.operations_pg import PgOperationsStore

            ops_store = PgOperationsStore(cfg.postgres)
            self.operations: Any = Operations(
                self.db, self._ops_publish, self.clock_ms, store=ops_store,
                metrics=PgMetricsStore(ops_store),  # one pool for the writes and the numbers
                sync=ClusterSync(self.redis, cfg.redis_prefix, channel="__operations__"))
            self.commerce.find_coupon = self.operations.find_coupon
        else:
            self.operations = Operations(self.db, self._ops_publish, self.clock_ms)
        self.commerce.coupons = self.operations.coupons
        self._register_api()
        self._register_operations_api()

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.db.start()
        await self.bus.start()
        await self.sanctions.store.start()
        self._load_rooms()
        await self.community.start()
        await self.commerce.start()
        if self.ledger is not None:
            # orders live in PostgreSQL; the embedded ledger's tables still exist (empty) for
            # the node-local SQLite readers (the operations and their numbers read PostgreSQL)
            from server.store.ledger import SqliteLedger

            await SqliteLedger(self.db).migrate()
        await self.operations.start()  # after both: it reads their tables
        from media.relay import MediaRelay

        self.media = MediaRelay(
            rtc_host=self.cfg.rtc_host, stun_urls=tuple(self.cfg.stun_url or ()),
            turn_urls=tuple(self.cfg.turn_url or ()), turn_secret=self.cfg.turn_secret or None,
        )
        self.rooms.start()
        if self.presence is not None:
            await self.presence.start()
        if self.cfg.demo:
            await self._seed_demo()
        self.server = await self._listen(self.cfg.port, reuse_port=self.cfg.workers > 1)
        sock = next(iter(self.server.sockets))
        self.cfg.port = sock.getsockname()[1]
        if self.redis is not None:  # after the bind: the advertised URL needs the real port
            from server.cascade import MediaCascade

            if self.cfg.workers > 1:
                # workers share the port, and the kernel picks the worker of each connection:
                # an edge must reach *this* worker, so it gets a private port of its own
                self.worker_server = await self._listen(0, reuse_port=False)

            self.cascade = MediaCascade(
                self.media, self.redis, advertise_url=self.advertise_url(),
                secret=self.cfg.secret, node_id=self.node_id, prefix=self.cfg.redis_prefix,
                grace_s=self.cfg.edge_grace_s,
            )
            await self.cascade.start()

    async def _listen(self, port: int, *, reuse_port: bool) -> Listener:
        listener = Listener(self)  # HTTP and websockets on one port (server/listener.py)
        await listener.start(self.cfg.host, port, reuse_port=reuse_port)
        return listener

    def advertise_url(self) -> str:
        """Where other nodes reach this one for media pulls: a worker's private port under
        --workers, else --advertise-url, else derived from --host/--port (--rtc-host when
        listening on every interface)."""
        port = self.cfg.port
        if self.worker_server is not None:
            port = next(iter(self.worker_server.sockets)).getsockname()[1]
        elif self.cfg.advertise_url:
            return self.cfg.advertise_url
        host = self.cfg.host
        if host in ("", "0.0.0.0", "::"):
            host = self.cfg.rtc_host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{port}/ws"

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
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)
        if self.cascade is not None:
            with contextlib.suppress(Exception):
                await self.cascade.stop()
        if self.media is not None:
            with contextlib.suppress(Exception):
                await self.media.close()
        for feature in (self.operations, self.community, self.commerce):
            with contextlib.suppress(Exception):
                await feature.stop()
        for server in (self.server, self.worker_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        await self.bus.stop()
        with contextlib.suppress(Exception):
            await self.sanctions.store.close()
        if self.ledger is not None:
            with contextlib.suppress(Exception):
                await self.ledger.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await self.db.close()

    async def run_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.drain()

    # ---- subscriptions --------------------------------------------------------------
    def subscribe(self, s: Session, ch: str) -> None:
        s.channels.add(ch)
        if not s.closing:  # a closing connection gets no more frames (its close frame is out)
            self.hub.subscribe(ch, s)
        self.bus.watch(ch)
        if ch.startswith("room:") and s.identity is not None:  # operations: presence log
            self.operations.viewer_joined(ch[5:], s.identity.id, s.identity.role)

    def unsubscribe(self, s: Session, ch: str) -> None:
        s.channels.discard(ch)
        self.hub.unsubscribe(ch, s)
        if not self.hub.has_subscribers(ch):
            self.bus.unwatch(ch)

    def leave(self, s: Session, ch: str) -> None:
        if ch not in s.channels:
            return
        self.unsubscribe(s, ch)
        if ch.startswith("room:") and s.identity is not None:  # operations: presence log
            self.operations.viewer_left(ch[5:], s.identity.id)
        room = self.rooms.get(ch)
        if room is not None and s.identity is not None:
            room.exit(s.identity.id)
            self.rooms.dirty_viewers.add(ch)

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
        for ch in list(s.channels):
            self.leave(s, ch)

    async def disconnect(self, s: Session) -> None:
        for ch in list(s.channels):
            self.leave(s, ch)
        if self.media is not None and s.media:
            for kind, room in list(s.media):
                try:
                    if kind == "publish":
                        await self.media.unpublish(room)
                        if self.cascade is not None:
                            await self.cascade.withdraw(room)
                    else:
                        await self.media.unwatch(room, media_ops.peer_id(s))
                except Exception:
                    log.exception("releasing media failed", extra={"room": room, "kind": kind})

    async def group_exists(self, group: str) -> bool:
        return await self.community.group_known(group)

    async def may_enter_group(self, ident: Identity, group: str) -> bool:
        if ident.token_lists_group(group):
            return True
        return await self.community.is_member_fresh(ident.id, group)

    def _on_remote(self, ch: str, event: dict[str, Any]) -> None:
        """Another node's event on a watched channel: rooms and commerce follow it."""
        if self.replica is not None:
            self.replica.apply(ch, event)
        try:
            self.commerce.on_remote(ch, event)
        except Exception:
            log.exception("commerce could not follow a remote event on %s", ch)

    # ---- feature hooks --------------------------------------------------------------
    async def snapshot(self, ch: str) -> dict[str, Any]:
        kind, _, key = ch.partition(":")
        if kind == "room":  # cluster: sales and offers other nodes created
            await self.commerce.sync_room(key)
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
        if kind == "room":
            snap.update(self.commerce.room_snapshot(key))
            snap.update(self.community.room_snapshot(key))
        elif kind == "group":
            snap.update(self.community.group_snapshot(key))
        if self.presence is not None and room is not None:
            snap["viewers"] = self.presence.total(ch)
            snap["likes"] = self.presence.likes_total(ch)
        snap["epoch"] = epoch
        snap["seq"] = seq
        return snap

    @staticmethod
    def _node_unique_ids(room: Room) -> None:
        """In a cluster each node numbers chat messages; start each node's numbering at a
        random point so ids from two nodes do not collide (delete_message names one)."""
        room.next_msg = secrets.randbelow(2**40) * 1000 + 1

    def check_text(self, text: str, ident: Identity, ch: str | None = None) -> None:
        """The link/ad filter (and, in a group, membership and the welfare rule)."""
        if ch is not None and ch.startswith("group:"):
            self.community.check_group_chat(ch[6:], ident.public(), text)
        else:
            self.community.check_text(text, ident.role)

    async def after_chat(self, ch: str, room: Room, ident: Identity, msg: dict[str, Any]) -> None:
        if room.kind == "group":
            await self.community.on_group_chat(room.id, ident.public(), msg)
        else:  # operations: room messages count in the merchant's numbers
            self.operations.activity(room.id, ident.id, ident.role, "chat")

    async def product_card(self, product_id: str) -> dict[str, Any]:
        product = await self.commerce.find_product(product_id)
        if product is None:
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        return dict(product)

    async def buy(self, ident: Identity, frame: dict[str, Any]) -> dict[str, Any]:
        await self.operations.check_sale_target(frame.get("sale"), ident.id)  # a layer's sale
        return dict(await self.commerce.buy(ident.id, frame.get("sale"), frame.get("qty", 1),
                                            frame.get("key"), ident.name, coupon=frame.get("coupon")))

    def _commerce_publish(self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
        """Commerce events go to the bus; the ones the community cares about also go there:
        a sale going live or a team buy opening notifies the linked groups, a confirmed order
        tags the buyer."""
        self.bus.publish(ch, type, fields, droppable=droppable)
        if type == "sale" and fields.get("phase") == "live" and fields.get("id") not in self._announced:
            self._announced.add(str(fields.get("id")))
            room = self.rooms.get(room_channel(str(fields.get("room"))))  # operations: actions log
            self.operations.action(room.shop if room else "default", "room", str(fields.get("room")),
                                   "sale", str(fields.get("title") or fields.get("id")))
            self._spawn(self.community.on_sale_started(str(fields.get("room")), fields))
        elif type == "teambuy" and fields.get("id") not in self._announced:
            self._announced.add(str(fields.get("id")))
            self._spawn(self.community.on_teambuy_started(str(fields.get("room")), fields))
        elif type == "coupon" and fields.get("status") == "redeemed":  # cluster: other books learn
            self.operations.coupon_spent(str(fields.get("id")), str(fields.get("order")))
        elif type == "order" and fields.get("status") == "confirmed":
            product = self.commerce.product(str(fields.get("product")))
            shop = product["shop"] if product else "default"
            self._spawn(self.community.tag_purchase(shop, str(fields.get("user")), str(fields.get("product"))))

    def _ops_publish(self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
        self.bus.publish(ch, type, fields, droppable=droppable)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def room_ended(self, room: Room) -> None:
        if self.media is not None:
            with contextlib.suppress(Exception):
                await self.media.close_room(room.id)

    async def save_room(self, room: Room) -> None:
        pinned = orjson.dumps(room.pinned).decode() if room.pinned is not None else None

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO rooms (id, title, shop, state, pinned) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET title=excluded.title, shop=excluded.shop, "
                "state=excluded.state, pinned=excluded.pinned",
                (room.id, room.title, room.shop, room.state, pinned),
            )

        await self.db.write(write)
        self.operations.note_room(room.id, room.shop)  # cluster: the numbers' room -> shop

    def _load_rooms(self) -> None:
        rows = self.db.read_sync(lambda c: c.execute("SELECT * FROM rooms").fetchall())
        for row in rows:
            room = self.rooms.room(row["id"])
            room.title, room.shop, room.state = row["title"], row["shop"], row["state"]
            room.pinned = orjson.loads(row["pinned"]) if row["pinned"] else None

    # ---- HTTP -----------------------------------------------------------------------
    def page_for(self, path: str) -> str | None:
        if path in ("/", "/index.html"):
            return "index.html"
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] in PAGES and len(parts) <= 2:
            return PAGES[parts[0]]
        return None

    def demo_token(self, query: dict[str, list[str]]) -> dict[str, Any]:
        role = (query.get("role") or ["viewer"])[0]
        if role not in Role.ALL:
            raise SoukError(Code.INVALID, f"role must be one of {', '.join(Role.ALL)}")
        room = (query.get("room") or ["demo"])[0]
        if not fields.ID_RE.fullmatch(room):
            raise SoukError(Code.INVALID, "bad room id")
        name = (query.get("name") or [""])[0][:32]
        sub = (query.get("sub") or [""])[0][:64]
        if not sub or not fields.ID_RE.fullmatch(sub):
            sub = f"{role}-{int(time.time() * 1000) % 10_000_000:07d}-{len(self.sessions)}"
        token = mint_token(self.cfg.secret, sub, name=name or sub, role=role, rooms=[room, "*"] if role == "admin" else [room],
                           groups=["*"], ttl_s=12 * 3600)
        return {"token": token, "user": {"id": sub, "name": name or sub, "role": role}, "room": room}

    def _register_api(self) -> None:
        async def room_info(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            ident = bearer(self, request, query)
            key = parts[1]
            if not ident.may_enter_room(key):
                raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
            room = self.rooms.get(room_channel(key))
            if room is None:
                raise SoukError(Code.NOT_FOUND, "no such room")
            return json_response(await self.snapshot(room_channel(key)))

        async def room_stats(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            ident = bearer(self, request, query)
            if not ident.is_staff or not ident.may_enter_room(parts[1]):
                raise SoukError(Code.FORBIDDEN, "stats are for the room's streamer, moderators and admins")
            return json_response(await self.community.room_stats(parts[1]))

        async def room_sales(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            self._staff_of(request, query, parts[1])
            return json_response(await self.commerce.sales_stats(parts[1]))

        async def room_orders(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            self._staff_of(request, query, parts[1])
            after: str | None = (query.get("after") or [""])[0] or None
            raw_limit = (query.get("limit") or ["1000"])[0]
            if not raw_limit.isdigit():
                raise SoukError(Code.INVALID, "limit must be a positive integer")
            limit = min(5000, max(1, int(raw_limit)))
            orders = await self.commerce.store.orders_of_room(parts[1], limit, after)
            return json_response({"room": parts[1], "orders": orders,
                                  "next": orders[-1]["id"] if len(orders) == limit else None})

        self.http.api["rooms/*"] = room_info
        self.http.api["rooms/*/sales"] = room_sales
        self.http.api["rooms/*/orders"] = room_orders
        self.http.api["rooms/*/stats"] = room_stats

    def _register_operations_api(self) -> None:
        """The merchant's numbers (issue 10): streamer/admin tokens of the shop."""

        def merchant(request: Request, query: dict[str, list[str]]) -> Identity:
            ident = bearer(self, request, query)
            if ident.role not in (Role.STREAMER, Role.ADMIN):
                raise SoukError(Code.FORBIDDEN, "the numbers are for the shop's streamers and admins")
            return ident

        async def room_metrics(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            ident = merchant(request, query)
            if not fields.ID_RE.fullmatch(parts[1]) or not ident.may_enter_room(parts[1]):
                raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
            await self.operations.flush()
            room = self.rooms.get(room_channel(parts[1]))
            shop = room.shop if room is not None else None  # cluster: else the record's room_shops
            return json_response(await self.operations.metrics.room_metrics(parts[1], shop))

        async def group_metrics(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            ident = merchant(request, query)
            if fields.ID_RE.fullmatch(parts[1]):  # cluster: a group made on another node
                await self.community.group_known(parts[1])
            group = self.community.directory.groups.get(parts[1])
            if group is None:
                raise SoukError(Code.NOT_FOUND, "no such group")
            if ident.role != Role.ADMIN and group.shop != ident.shop:
                raise SoukError(Code.FORBIDDEN, "this group belongs to another shop")
            await self.operations.flush()
            return json_response(await self.operations.metrics.group_metrics(parts[1], self.clock_ms()))

        async def shop_metrics(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
            if parts[1] != "metrics":  # the router matches "shop/*"
                raise SoukError(Code.NOT_FOUND, "no such resource")
            ident = merchant(request, query)
            await self.operations.flush()
            return json_response(await self.operations.metrics.shop_metrics(ident.shop))

        self.http.api["rooms/*/metrics"] = room_metrics
        self.http.api["groups/*/metrics"] = group_metrics
        self.http.api["shop/*"] = shop_metrics  # GET /api/shop/metrics

    def _staff_of(self, request: Request, query: dict[str, list[str]], room: str) -> Identity:
        ident = bearer(self, request, query)
        if ident.role not in (Role.STREAMER, Role.ADMIN) or not ident.may_enter_room(room):
            raise SoukError(Code.FORBIDDEN, "sales and orders are for the room's streamer and admins")
        return ident

    def refresh_metrics(self) -> None:
        st = self.hub.stats
        self.metrics.events.set(st.events)
        self.metrics.writes.set(st.writes)
        self.metrics.dropped.set(st.dropped)
        self.metrics.overflows.set(st.overflows)
        self.metrics.rooms.set(len(self.rooms.by_channel))
        if self.media is not None:
            for key, value in self.media.stats().items():
                self.metrics.media_children(key).set(value)
        if self.cascade is not None:
            self.metrics.media_children("edge_pulls_started_total").set(self.cascade.pulls_started)
            self.metrics.media_children("edge_pulls_ended_total").set(self.cascade.pulls_ended)

    async def _seed_demo(self) -> None:
        """A demo room linked to a demo core group whose demo member is already in it."""
        room = self.rooms.room("demo")
        if not room.title:
            room.title = "Souk demo live room"
            for fields in (
                {"id": "demo-serum", "title": "Hydrating serum 30 ml", "price": 12900, "stock": 500,
                 "image": "/static/products/serum.svg"},
                {"id": "demo-mask", "title": "Sheet masks x10", "price": 5900, "stock": 1000,
                 "image": "/static/products/mask.svg"},
            ):
                if self.commerce.product(str(fields["id"])) is None:
                    await self.commerce.product_create("default", fields)
            room.pinned = self.commerce.product("demo-serum")
            await self.save_room(room)
        community = self.community
        if "demo-core" not in community.directory.groups:
            group = community.directory.create_group(
                "demo-core", "default", {"tier": "core", "topic": "demo", "title": "Demo core fans"},
                self.clock_ms())
            await community.store.create_group(group)
            await community.link_groups("demo", ["demo-core"], shop="default")
            await community.group_join({"id": "demo-member", "name": "Demo member", "role": "member"},
                                       "demo-core", None, None, shop="default")
