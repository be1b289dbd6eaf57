"""The one place that chooses the storage: `open_stores(cfg)`.

Why one factory: a feature is given its store (and, in a cluster, the channel on which nodes
tell each other what they committed) and never learns which database it has; the cluster's
differences are the store's capabilities (`shared`, the commerce gate) and the notices.

- embedded (default): one SQLite file in the data directory, written with group commit;
- cluster (`--redis` and `--postgres`): the nodes' shared PostgreSQL database, the flash-sale
  stock gate in Redis, and change notices over Redis for the working copies of the community,
  the engagement feature and the insights (excluded users);
- `--redis` alone: each node keeps its own SQLite file (rooms and chat go over the bus).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from server.cluster.notices import (
    DRAWS_CHANNEL,
    ENGAGEMENT_CHANNEL,
    INSIGHTS_CHANNEL,
    ClusterSync,
    NoSync,
    Sync,
)
from server.config import Config
from server.store.chat import SqlChatStore
from server.store.community import SqlCommunityStore
from server.store.db import Db
from server.store.draws import SqlDrawStore
from server.store.engagement import SqlEngagementStore
from server.store.gate import StockGate
from server.store.images import SqlImageStore
from server.store.insights import SqlInsightsStore
from server.store.ledger import SqlLedger
from server.store.postgres import PgDatabase
from server.store.replays import SqlReplayStore
from server.store.rooms import SqlRoomStore, SqlSanctionStore
from server.store.schema import migrate, move_node_rooms
from server.store.sqlite import SqliteDatabase


@dataclass
class Stores:
    """Every store of a process, over one database; `start` opens and migrates it."""

    db: Db
    ledger: SqlLedger
    community: SqlCommunityStore
    engagement: SqlEngagementStore
    insights: SqlInsightsStore
    rooms: SqlRoomStore
    sanctions: SqlSanctionStore
    draws: SqlDrawStore
    chat: SqlChatStore
    replays: SqlReplayStore
    images: SqlImageStore
    community_sync: Sync = field(default_factory=NoSync)
    engagement_sync: Sync = field(default_factory=NoSync)
    insights_sync: Sync = field(default_factory=NoSync)
    draws_sync: Sync = field(default_factory=NoSync)
    node_file: Path | None = None  # a cluster node's SQLite file of the first release

    async def start(self) -> None:
        await self.db.start()
        await migrate(self.db)
        if self.node_file is not None:
            await move_node_rooms(self.db, self.node_file)

    async def close(self) -> None:
        await self.db.close()


def stores_on(db: Db, gate: StockGate | None = None) -> Stores:
    """Every store over one database (not started)."""
    return Stores(db, SqlLedger(db, gate), SqlCommunityStore(db), SqlEngagementStore(db),
                  SqlInsightsStore(db), SqlRoomStore(db), SqlSanctionStore(db), SqlDrawStore(db),
                  SqlChatStore(db), SqlReplayStore(db), SqlImageStore(db))


def open_stores(cfg: Config, redis: Redis | None = None) -> Stores:
    """The stores the configuration asks for; `redis` is the node's client (a cluster's
    gate and notices use it)."""
    if not cfg.postgres:
        return stores_on(SqliteDatabase(cfg.db_path))
    if redis is None:
        raise SystemExit("souk: --postgres needs --redis (the stock gate lives there)")
    stores = stores_on(PgDatabase(cfg.postgres), StockGate(redis, cfg.redis_prefix))
    stores.community_sync = ClusterSync(redis, cfg.redis_prefix)
    stores.engagement_sync = ClusterSync(redis, cfg.redis_prefix, channel=ENGAGEMENT_CHANNEL)
    stores.insights_sync = ClusterSync(redis, cfg.redis_prefix, channel=INSIGHTS_CHANNEL)
    stores.draws_sync = ClusterSync(redis, cfg.redis_prefix, channel=DRAWS_CHANNEL)
    stores.node_file = cfg.db_path
    return stores


async def open_db(target: Path | str) -> Db:
    """A started, migrated database: a SQLite file (a path) or PostgreSQL (a DSN)."""
    is_pg = str(target).startswith(("postgres://", "postgresql://"))
    db: Db = PgDatabase(str(target)) if is_pg else SqliteDatabase(target)
    await db.start()
    await migrate(db)
    return db
