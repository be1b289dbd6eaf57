"""Token buckets, sans-I/O: the caller passes the time, so limits are testable in microseconds."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; `take` answers whether the op may run."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp_ms: int = 0

    def take(self, now_ms: int, cost: float = 1.0) -> bool:
        if self.tokens < 0:
            self.tokens = self.burst
            self.stamp_ms = now_ms
        elapsed = max(0, now_ms - self.stamp_ms) / 1000.0
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp_ms = now_ms
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


@dataclass(slots=True)
class StrikeCounter:
    """Counts refusals in a sliding window; too many means abuse and the connection is closed.

    A window of fixed buckets keeps it O(1): strikes older than `window_ms` fall off.
    """

    limit: int
    window_ms: int
    count: int = 0
    window_start_ms: int = 0

    def strike(self, now_ms: int) -> bool:
        """Record one refusal; True when the limit is exceeded within the window."""
        if now_ms - self.window_start_ms > self.window_ms:
            self.window_start_ms = now_ms
            self.count = 0
        self.count += 1
        return self.count > self.limit


class UserBuckets:
    """One TokenBucket per user, shared by all of that user's connections on this node: a
    user who opens ten sockets must not chat ten times as fast. Bounded (least recently used
    buckets go first): a forgotten bucket only means that user starts again from a full
    burst, which is what an idle user has anyway."""

    def __init__(self, rate: float, burst: float, cap: int = 100_000) -> None:
        self.rate, self.burst, self.cap = rate, burst, cap
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def of(self, user: str) -> TokenBucket:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self.cap:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
