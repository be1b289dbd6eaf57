"""Change notices between the nodes of a cluster, for the features' working copies.

Why: each node keeps Q&A boards, groups, links and connectors (the community), coupons,
polls, codes, posts and settings (engagement) and the shops' excluded users (insights) in
memory (the hot paths), and PostgreSQL holds the record (server/store/). After a node commits
a change it publishes one small notice on its feature's cluster-internal Redis pub/sub
channel (`P__community__`, `P__operations__`, `P__insights__`) that every node subscribes to,
whatever rooms its viewers watch; the other nodes update their copy: a question notice
carries the committed row (applied only if its `rev` is newer), the other kinds name the
entity and the node reloads it from PostgreSQL (or carry the new value). The client-visible
events still go through the bus once, from the node that made the change; a notice never
makes a node publish, mirror or deliver anything again.

Pub/sub is at most once: a notice lost while Redis is away leaves a node's copy stale until
the next notice about that entity, a lazy load on a miss, or a guarded write that refuses
with the committed row (the adapter adopts it). Nothing durable depends on a notice.

Messages are msgpack maps: `{"n": node, "k": kind, ...}`; kinds and their fields are each
feature's (`Community.apply_notice` in server/community/cluster.py, `Engagement.apply_notice`,
`Insights.apply_notice`). A feature alone in its process gets `NoSync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger("souk.cluster.notices")

Notice = dict[str, Any]
CHANNEL = "__community__"
# The engagement feature's topic. Its name is part of what the nodes of a cluster say to each
# other, so it stays as the first release named it.
ENGAGEMENT_CHANNEL = "__operations__"
INSIGHTS_CHANNEL = "__insights__"
DRAWS_CHANNEL = "__draws__"  # lucky draws: a draw made or finished on another node


class Sync(Protocol):
    """How a feature tells the other nodes what it committed and hears what they did."""

    async def start(self) -> None: ...
    def run(self, handler: Callable[[Notice], Awaitable[None]]) -> None: ...
    async def stop(self) -> None: ...
    def notify(self, kind: str, **fields: Any) -> None: ...
    async def idle(self) -> None: ...


class NoSync:
    """One process: nobody else to tell, nothing to hear."""

    async def start(self) -> None:
        return None

    def run(self, handler: Callable[[Notice], Awaitable[None]]) -> None:
        return None

    async def stop(self) -> None:
        return None

    def notify(self, kind: str, **fields: Any) -> None:
        return None

    async def idle(self) -> None:
        return None


class ClusterSync:
    """Publish change notices; hand other nodes' notices, in order, to one handler."""

    def __init__(self, redis: Redis, prefix: str = "souk:", channel: str = CHANNEL) -> None:
        """`channel`: one topic per feature (the community's `CHANNEL`, the engagement
        feature's `ENGAGEMENT_CHANNEL`, the insights' `INSIGHTS_CHANNEL`), so each handler
        sees only its own kinds."""
        self.redis = redis
        self.topic = prefix + channel
        self.node = secrets.token_hex(6)
        self.sent = 0
        self.applied = 0
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def start(self) -> None:
        """Subscribe now; notices queue until `run` gives them a handler (so a node that
        subscribes, then loads from PostgreSQL, misses nothing committed in between)."""
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.topic)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._reader(), name="community-sync-read"))
        self._tasks.append(loop.create_task(self._writer(), name="community-sync-write"))

    def run(self, handler: Callable[[Notice], Awaitable[None]]) -> None:
        """Apply queued and future notices with `handler`, one at a time, in arrival order."""
        self._tasks.append(
            asyncio.get_running_loop().create_task(self._apply(handler), name="community-sync")
        )

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 2)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    def notify(self, kind: str, **fields: Any) -> None:
        """Queue a notice (after the change committed); it goes out in order, retried while
        Redis is away."""
        body = msgpack.packb({**fields, "n": self.node, "k": kind}, use_bin_type=True)
        self._outbox.put_nowait(body)

    async def _writer(self) -> None:
        delay = 0.05
        while True:
            body = await self._outbox.get()
            while True:
                try:
                    await self.redis.publish(self.topic, body)
                    break
                except (RedisError, OSError) as exc:
                    log.warning("community notice not sent, retrying: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)
            delay = 0.05
            self.sent += 1
            self._outbox.task_done()

    async def _reader(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except (RedisError, OSError) as exc:
                log.warning("community notices lost, reconnecting: %s", exc)
                await asyncio.sleep(0.2)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            try:
                notice = msgpack.unpackb(msg["data"], raw=False)
            except Exception:
                log.warning("unreadable community notice dropped")
                continue
            if isinstance(notice, dict) and notice.get("n") != self.node:
                self._queue.put_nowait(notice)

    async def _apply(self, handler: Callable[[Notice], Awaitable[None]]) -> None:
        while True:
            notice = await self._queue.get()
            try:
                await handler(notice)
                self.applied += 1
            except Exception:  # one bad notice must not stop the others
                log.exception("applying a community notice failed: %s", notice.get("k"))

    async def idle(self) -> None:
        """Wait until every notice this node queued has been published (tests, drain)."""
        await self._outbox.join()
