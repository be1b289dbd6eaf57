"""The in-process event dispatcher: features announce domain events, reactions subscribe.

Why a dispatcher and not calls: the feature that decides (commerce confirming an order) must
not import the features that react (community tagging the buyer, engagement counting), or
each feature ends up knowing every other. Subscriptions are made once, at wiring time
(`server/reactions.py`), so the whole map of who reacts to what is in one place.

Two ways to announce:
- `emit(event)`: the announcer goes on at once. A reaction that fails is logged and never
  undoes what the announcer did (a committed order stays committed); a reaction that returns
  an awaitable runs as a background task, awaited by `drain()` at shutdown.
- `await deliver(event)`: the announcer waits for every reaction in order and a failure is
  raised to it: for a chat message whose group reaction decides what the sender hears.

The events themselves are plain data (`server/domain/events.py`). One dispatcher per process;
no queue, no thread: emitting costs a dict lookup and the reactions' own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server.domain.events import DomainEvent

log = logging.getLogger("souk.events")

E = TypeVar("E", bound=DomainEvent)
Reaction = Callable[[E], Awaitable[object] | None]


class EventDispatcher:
    """Reactions by event type, in the order they were subscribed."""

    def __init__(self) -> None:
        self._reactions: dict[type, list[Callable[[Any], Awaitable[object] | None]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    def subscribe(self, kind: type[E], reaction: Reaction[E]) -> None:
        self._reactions.setdefault(kind, []).append(reaction)

    def subscribed(self, kind: type) -> int:
        """How many reactions `kind` has (for tests and the architecture check)."""
        return len(self._reactions.get(kind, ()))

    def emit(self, event: DomainEvent) -> None:
        for reaction in self._reactions.get(type(event), ()):
            try:
                result = reaction(event)
            except Exception:
                log.exception("reaction to %s failed", type(event).__name__)
                continue
            if result is not None and inspect.isawaitable(result):
                self._spawn(result)

    async def deliver(self, event: DomainEvent) -> None:
        for reaction in self._reactions.get(type(event), ()):
            result = reaction(event)
            if result is not None and inspect.isawaitable(result):
                await result

    def _spawn(self, awaitable: Awaitable[object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background reaction failed", exc_info=task.exception())

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded, per task) for the reactions still running: at shutdown, before the
        features they write to stop."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout_s)
