"""What every PostgreSQL store of a node shares: its connection pool and its schema.

Why one place: each store (community, operations, ...) either gets a pool that another store
opened (they share connections) or opens its own from a DSN, and creates its tables at start-up
under an advisory lock, so nodes that start together do not race on `CREATE TABLE`. The
subclass names its tables (`SCHEMA`) and its lock key (`MIGRATE_LOCK`).
"""

from __future__ import annotations

from typing import ClassVar

import asyncpg


class PgStore:
    """A store over an asyncpg pool (given, or opened from a DSN by `start`)."""

    SCHEMA: ClassVar[tuple[str, ...]] = ()
    MIGRATE_LOCK: ClassVar[int] = 0
    POOL_SIZE: ClassVar[int] = 4

    def __init__(self, pool: asyncpg.Pool | str) -> None:
        self._dsn = pool if isinstance(pool, str) else None
        self.pool: asyncpg.Pool = None if isinstance(pool, str) else pool

    async def start(self) -> None:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self.POOL_SIZE)
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", self.MIGRATE_LOCK)
            for sql in self.SCHEMA:
                await c.execute(sql)

    async def close(self) -> None:
        """Close the pool if this store opened it (it was given a DSN)."""
        if self._dsn is not None and self.pool is not None:
            await self.pool.close()
            self.pool = None
