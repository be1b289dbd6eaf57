"""Coalescing of progress pushes (sale stock, team progress): at most one per interval.

Why: a rush moves stock hundreds of times a second and every move would be a room-wide
broadcast (about 60 ms of loop time at 5,000 viewers). Viewers need the trend, not each step,
so while a value moves it is pushed at most every `interval_ms`; final states (sold out,
team full or failed) are phase changes that the adapter pushes at once, outside the throttle.
"""

from __future__ import annotations

from typing import Final

PUSH_INTERVAL_MS: Final = 100


class PushThrottle:
    """`note(now)` says when to push: `now` (push at once, then call `pushed`), a later time
    (schedule one flush then), or None (a flush is already scheduled)."""

    def __init__(self, interval_ms: int = PUSH_INTERVAL_MS) -> None:
        self.interval_ms = interval_ms
        self.last_push: int | None = None
        self.pending = False

    def note(self, now_ms: int) -> int | None:
        if self.pending:
            return None
        if self.last_push is None or now_ms - self.last_push >= self.interval_ms:
            return now_ms
        self.pending = True
        return self.last_push + self.interval_ms

    def pushed(self, now_ms: int) -> None:
        self.last_push = now_ms
        self.pending = False
