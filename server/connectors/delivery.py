"""Outbound delivery: one queue and worker per connector, rate-limited, retried, never lost.

Why a worker per connector: each platform limits each webhook separately (Slack ~1/s, WeCom
20/min), so one slow or throttled destination must not hold up the others. A failing item is
retried with exponential backoff (honouring Retry-After); after `max_attempts` (or at once on
a permanent refusal, or when the queue is full) it becomes a dead letter: persisted and
reported to the caller (`on_dead_letter`), which publishes `connector_dead_letter` to staff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from server.connectors.addresses import connector_kwargs
from server.connectors.formats import Connector, accepted, render
from server.connectors.signing import signed_headers

DeadLetterHook = Callable[[Connector, dict[str, Any], str, int], Coroutine[Any, Any, None]]


class SlidingWindow:
    """At most `limit` sends in any `window_s` window (a platform's documented limit)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.sent: deque[float] = deque()

    def delay(self, now: float) -> float:
        while self.sent and self.sent[0] <= now - self.window_s:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[0] + self.window_s - now

    def record(self, now: float) -> None:
        self.sent.append(now)


@dataclass
class DeliveryStats:
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    dead_letters: int = 0


class _Lane:
    def __init__(self, conn: Connector, max_queue: int) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self.windows = [SlidingWindow(n, w) for n, w in conn.rate_limits()]
        self.task: asyncio.Task[None] | None = None
        self.paused_until = 0.0
        self.current: dict[str, Any] | None = None


class Delivery:
    """Queues items per connector and POSTs them with aiohttp."""

    def __init__(
        self,
        clock_ms: Callable[[], int],
        on_dead_letter: DeadLetterHook,
        *,
        max_attempts: int = 5,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        timeout_s: float = 10.0,
        max_queue: int = 10_000,
        allow_private: bool = False,
    ) -> None:
        """`allow_private`: may POST to loopback, private and reserved addresses
        (server/connectors/addresses.py; `--allow-private-webhooks`)."""
        self.allow_private = allow_private
        self.clock_ms = clock_ms
        self.on_dead_letter = on_dead_letter
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self.stats = DeliveryStats()
        self._lanes: dict[str, _Lane] = {}
        self._session: aiohttp.ClientSession | None = None
        self._bg: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": "souk-connector/1"},
                **connector_kwargs(self.allow_private),
            )
        for lane in self._lanes.values():
            self._spawn(lane)

    async def stop(self) -> list[tuple[Connector, dict[str, Any]]]:
        """Stop the workers; returns the items not delivered (in flight or queued).

        The caller records them as dead letters, so a shutdown loses nothing silently.
        """
        tasks = [lane.task for lane in self._lanes.values() if lane.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left: list[tuple[Connector, dict[str, Any]]] = []
        for lane in self._lanes.values():
            lane.task = None
            if lane.current is not None:
                left.append((lane.conn, lane.current))
                lane.current = None
            while not lane.queue.empty():
                left.append((lane.conn, lane.queue.get_nowait()))
        if self._bg:  # dead letters being recorded: let them finish
            await asyncio.gather(*self._bg, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        return left

    def add(self, conn: Connector) -> None:
        if conn.id in self._lanes:
            return
        lane = _Lane(conn, self.max_queue)
        self._lanes[conn.id] = lane
        if self._session is not None:
            self._spawn(lane)

    def connectors_for(self, room: str) -> list[Connector]:
        return [lane.conn for lane in self._lanes.values() if lane.conn.room == room]

    def pending(self) -> int:
        return sum(lane.queue.qsize() for lane in self._lanes.values())

    def enqueue(self, connector_id: str, item: dict[str, Any]) -> None:
        """Queue without waiting; a full queue turns the item into a dead letter at once."""
        lane = self._lanes[connector_id]
        try:
            lane.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dead(lane.conn, item, "queue full", 0)

    def _spawn(self, lane: _Lane) -> None:
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._work(lane), name=f"connector-{lane.conn.id}")

    def _dead(self, conn: Connector, item: dict[str, Any], error: str, attempts: int) -> None:
        self.stats.dead_letters += 1
        task = asyncio.create_task(self.on_dead_letter(conn, item, error, attempts))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _work(self, lane: _Lane) -> None:
        while True:
            item = await lane.queue.get()
            lane.current = item
            try:
                await self._deliver(lane, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not kill the lane, nor lose the item
                self._dead(lane.conn, item, f"internal: {type(exc).__name__}: {exc}", 0)
            lane.current = None

    async def _pace(self, lane: _Lane) -> None:
        while True:
            now = time.monotonic()
            wait = max([lane.paused_until - now] + [w.delay(now) for w in lane.windows])
            if wait <= 0:
                for w in lane.windows:
                    w.record(now)
                return
            await asyncio.sleep(wait)

    async def _deliver(self, lane: _Lane, item: dict[str, Any]) -> None:
        conn = lane.conn
        limit = int(conn.config.get("max_attempts", self.max_attempts))
        url, body = render(conn, item)
        error = ""
        for attempt in range(1, limit + 1):
            await self._pace(lane)
            self.stats.attempts += 1
            retry_after: float | None = None
            headers = {"Content-Type": "application/json"}
            headers.update(signed_headers(conn.secret, body, self.clock_ms()))
            assert self._session is not None
            try:
                async with self._session.post(url, data=body, headers=headers) as resp:
                    reply = await resp.content.read(64 * 1024)
                    verdict = accepted(conn.platform, resp.status, dict(resp.headers), reply)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error, retryable = f"{type(exc).__name__}: {exc}"[:300], True
            else:
                if verdict.ok:
                    self.stats.delivered += 1
                    return
                error, retryable, retry_after = verdict.error, verdict.retry, verdict.retry_after_s
            if not retryable or attempt == limit:
                self._dead(conn, item, error, attempt)
                return
            self.stats.retries += 1
            backoff = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
            backoff *= random.uniform(0.8, 1.2)  # jitter: many rooms retrying do not align
            if retry_after is not None:
                backoff = max(backoff, min(retry_after, self.max_backoff_s))
                lane.paused_until = time.monotonic() + backoff
            await asyncio.sleep(backoff)
