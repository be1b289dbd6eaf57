"""Room chat written before it is published, one transaction per loop iteration.

Why batched here: a chat burst must not cost one transaction per message. Every message
recorded during one loop iteration joins one write (the same shape as the orders' batch in
server/commerce/sales.py); on SQLite that write then shares the writer thread's group commit
and its one fsync with whatever else was queued, orders included. A sender hears `ok`, and
viewers see the message, only once it is durable: a chat a viewer saw survives `kill -9`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server.store.chat import ChatStore, Message

log = logging.getLogger("souk.chatlog")

_MAX_BATCH = 512
_PRUNE_CHUNK = 2_000  # messages deleted per transaction by the retention sweep


class ChatLog:
    def __init__(self, store: ChatStore) -> None:
        self.store = store
        self._batch: list[tuple[str, Message, asyncio.Future[Message | None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.writes = 0  # transactions written (read by tests and benchmarks)

    async def record(self, ch: str, msg: Message) -> Message | None:
        """Make the message durable; None once it is, or the first message if it is a
        resend of the same (channel, user, cid)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message | None] = loop.create_future()
        self._batch.append((ch, msg, fut))
        if len(self._batch) >= _MAX_BATCH:
            self._flush()
        elif len(self._batch) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._write(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[tuple[str, Message, asyncio.Future[Message | None]]]) -> None:
        try:
            results: list[Any] = await self.store.add_messages([(ch, m) for ch, m, _ in batch])
            self.writes += 1
        except Exception as exc:
            log.error("chat batch write failed: %r", exc)
            results = [exc] * len(batch)
        for (_, _, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def expire(self, before_ms: int) -> int:
        """Delete what was said before `before_ms` (the retention sweep), a chunk per
        transaction: a first sweep over months of chat must not hold the database's writer,
        and the orders queued behind it, for long."""
        done = 0
        while True:
            gone = await self.store.prune(before_ms, _PRUNE_CHUNK)
            done += gone
            if gone < _PRUNE_CHUNK:
                if done:
                    log.info("chat retention: %d stored messages deleted", done)
                return done

    async def drain(self) -> None:
        """Write what is queued and wait for the writes in flight (at shutdown)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
