"""The activity log: what the merchant's numbers are computed from that no other record holds.

Orders, questions, group messages, votes and check-ins are in the features' own tables; a
viewer's join, a room chat message, likes, the viewers present and the merchant's actions
(a sale going live, a talk) are noted here, in memory, and written in one batch about once a
second (`take` hands the batch to the writer). Staff are never noted: their activity would
inflate every rate. A crash loses at most the batch not yet written (docs/engagement.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

STAFF_ROLES: Final = frozenset({"moderator", "streamer", "admin"})

Activity = tuple[str, str, str, int, int]  # room, user, kind, n, ts
Presence = tuple[str, int, int, int]  # room, ts, viewers, interval_ms
Action = tuple[str, str, str, str, str, int]  # shop, scope, target, kind, detail, ts


class ActivityLog:
    """The notes of one process not yet written, and who is present in each room."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self.clock_ms = clock_ms
        self.present: dict[str, Counter[str]] = {}  # room -> user -> connections (viewers only)
        self.activity: list[Activity] = []
        self.presence: list[Presence] = []
        self.actions: list[Action] = []

    def viewer_joined(self, room: str, user: str, role: str) -> None:
        if role in STAFF_ROLES:
            return
        present = self.present.get(room)
        if present is None:  # not setdefault: that would build a Counter on every join
            present = self.present[room] = Counter()
        present[user] += 1
        self.activity.append((room, user, "view", 1, self.clock_ms()))

    def viewer_left(self, room: str, user: str) -> None:
        present = self.present.get(room)
        if present is None or user not in present:
            return
        present[user] -= 1
        if present[user] <= 0:
            del present[user]
            if not present:
                del self.present[room]

    def note(self, room: str, user: str, role: str, kind: str, n: int = 1) -> None:
        """A viewer's chat message or likes in a room (staff never counted)."""
        if role not in STAFF_ROLES:
            self.activity.append((room, user, kind, n, self.clock_ms()))

    def action(self, shop: str, scope: str, target: str, kind: str, detail: str) -> None:
        """A merchant action (a sale, a talk, a notice) for the 'what preceded changes' view."""
        self.actions.append((shop, scope, target, kind, detail[:100], self.clock_ms()))

    def sample_presence(self, interval_ms: int, excluded: Iterable[str]) -> None:
        """The number of distinct viewers in each room now, each counting for `interval_ms`."""
        now = self.clock_ms()
        skip = set(excluded)
        for room, users in self.present.items():
            n = sum(1 for u in users if u not in skip)
            if n:
                self.presence.append((room, now, n, interval_ms))

    def take(self) -> tuple[list[Activity], list[Presence], list[Action]] | None:
        """The notes to write, handed over once (None when there are none)."""
        if not (self.activity or self.presence or self.actions):
            return None
        batch = self.activity, self.presence, self.actions
        self.activity, self.presence, self.actions = [], [], []
        return batch
