"""Plumbing of the engagement adapter: the store, the clock, ids, the bus, the notices, tasks.

Why a module of its own: every part (coupons, polls, check-ins, invites, posts, layers)
writes through the same store, reads the same clock, publishes on the same bus and tells the
other nodes of a cluster what it committed. One object holds those handles, so a part is
built with one argument and a test that moves the clock moves it for every part.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from server.bus.base import Publish
from server.cluster.notices import Sync
from server.store.engagement import EngagementStore

log = logging.getLogger("souk.engagement")


def new_id(prefix: str, now_ms: int) -> str:
    """Time-ordered, unguessable ids (40 random bits beside the millisecond)."""
    return f"{prefix}{now_ms:x}{secrets.token_hex(5)}"


class Plumbing:
    """The handles every engagement part shares."""

    def __init__(self, store: EngagementStore, publish: Publish, clock_ms: Callable[[], int],
                 sync: Sync) -> None:
        self.store = store
        self.publish = publish
        self.clock_ms = clock_ms
        self.sync = sync

    def notify(self, kind: str, **fields: Any) -> None:
        """Tell the other nodes of a cluster what this node committed (nothing when alone)."""
        self.sync.notify(kind, **fields)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` on its own; a failure is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_report)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engagement task failed", exc_info=task.exception())
