"""Plumbing of the commerce adapter: the clock, ids, timers, background tasks and the bus.

Why a module of its own: flash sales, team buys and the cluster follower all schedule timers
on the loop, run writes as tasks that must outlive their caller, and publish events that must
never undo a committed order. One owner of those handles lets `Commerce.stop` cancel every
timer and wait for every write in one place.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from client_sdk.protocol import user_channel
from server.bus.base import Publish
from server.domain.events import DomainEvent, OrderConfirmed
from server.domain.order import CONFIRMED, Order

log = logging.getLogger("souk.commerce")


def wall_ms() -> int:
    """Milliseconds since the epoch: the protocol's time unit."""
    return time.time_ns() // 1_000_000


def new_id(prefix: str, now_ms: int) -> str:
    """Time-ordered, unguessable ids (48 random bits: collisions are not a practical concern,
    and a primary-key clash would fail the write, never merge two orders)."""
    return f"{prefix}{now_ms:x}{secrets.token_hex(6)}"


class Plumbing:
    """The clock, the bus, named timers and the tasks under way, shared by every part."""

    def __init__(
        self,
        publish: Publish,
        clock_ms: Callable[[], int],
        announce: Callable[[DomainEvent], None] | None = None,
    ) -> None:
        self.publish = publish
        self.announce = announce
        self.clock_ms = clock_ms
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        # told of each order the buyer has been told is confirmed (the room's purchase ticker)
        self.confirmed: Callable[[Order], None] | None = None

    def emit(
        self, ch: str, type_: str, payload: dict[str, Any], *, droppable: bool = False
    ) -> None:
        try:
            self.publish(ch, type_, payload, droppable=droppable)
        except Exception:  # the bus must never undo a committed order
            log.exception("publish to %s failed", ch)

    def tell(self, event: DomainEvent) -> None:
        """Announce a domain event to the other features (server/events.py); like `emit`, a
        failing reaction never undoes what commerce committed."""
        if self.announce is None:
            return
        try:
            self.announce(event)
        except Exception:
            log.exception("announcing %s failed", type(event).__name__)

    def order(self, order: Order) -> None:
        """Tell the buyer (`order` on user:<id>), and the other features when it is confirmed."""
        self.emit(user_channel(order.user), "order", order.to_dict())
        if order.status == CONFIRMED:
            self.tell(OrderConfirmed(order.id, order.user, order.room, order.product))
            if self.confirmed is not None:
                try:
                    self.confirmed(order)
                except Exception:  # social proof must never undo a committed order
                    log.exception("the purchase ticker failed")

    def call_at(self, name: str, at_ms: int, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop at wall time `at_ms` (replacing a timer of the same name)."""
        if self.loop is None or not self.running:
            return
        self.disarm(name)
        delay = max(0.0, (at_ms - self.clock_ms()) / 1000)

        def fire() -> None:
            self.timers.pop(name, None)
            try:
                fn()
            except Exception:
                log.exception("timer %s failed", name)

        self.timers[name] = self.loop.call_later(delay, fire)

    def disarm(self, name: str) -> None:
        handle = self.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_timers(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    async def drain(self) -> None:
        """Wait for the tasks under way, and for those they start meanwhile."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def detached(self, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run a change (memory, durable write, events) as a task of its own: cancelling the
        caller (a client that disconnects) must not stop it between the write and the state
        that follows it."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_retrieve)  # a refusal nobody waits for any more is not an error
        return await asyncio.shield(task)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
