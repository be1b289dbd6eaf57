"""Topic polls (话题投票) in a room or a group: options, one vote per member, live results.

Decision: a member has one vote per poll and may change it while the poll is open (the latest
choice counts, the tally never counts a member twice). Why: members change their mind in a
live discussion, and a changeable single vote keeps "one member, one voice" without forcing a
first click to be final. A closed poll (by `poll_close` or at `closes_at`) refuses votes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain import fields
from server.domain.errors import SoukError

MAX_OPTIONS: Final = 10
MAX_OPTION_LEN: Final = 100
MAX_QUESTION_LEN: Final = 300
MAX_OPEN_MS: Final = 30 * 86_400_000


@dataclass
class Poll:
    id: str
    shop: str
    scope: str  # "room" or "group"
    target: str  # the room or group id
    question: str
    options: list[str]
    created_by: str
    created_at: int
    closes_at: int | None = None
    closed: bool = False
    votes: dict[str, int] = field(default_factory=dict)  # user -> option index

    @property
    def channel(self) -> str:
        return f"{self.scope}:{self.target}"

    def is_open(self, now_ms: int) -> bool:
        return not self.closed and (self.closes_at is None or now_ms < self.closes_at)

    def tally(self) -> list[int]:
        counts = [0] * len(self.options)
        for choice in self.votes.values():
            counts[choice] += 1
        return counts

    def vote(self, user: str, option: Any, now_ms: int) -> bool:
        """Record (or change) `user`'s vote; returns False when it was already that option."""
        if not self.is_open(now_ms):
            raise SoukError(Code.ENDED, "this poll is closed")
        if type(option) is not int or not 0 <= option < len(self.options):
            raise fields.invalid("option", f"must be an option index 0..{len(self.options) - 1}")
        if self.votes.get(user) == option:
            return False
        self.votes[user] = option
        return True

    def close(self, now_ms: int) -> bool:
        """Close now; False if it was already closed (closing twice is harmless)."""
        if self.closed:
            return False
        self.closed = True
        if self.closes_at is None or self.closes_at > now_ms:
            self.closes_at = now_ms
        return True

    def to_dict(self, now_ms: int, *, user: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, self.scope: self.target, "question": self.question,
            "options": list(self.options), "counts": self.tally(), "voters": len(self.votes),
            "closes_at": self.closes_at, "open": self.is_open(now_ms), "created_at": self.created_at,
        }  # fmt: skip
        if user is not None:
            out["mine"] = self.votes.get(user)
        return out


def new_poll(poll_id: str, shop: str, scope: str, target: str, raw: Any, by: str, now_ms: int) -> Poll:
    """Validate `poll_create` fields: question, options (2..10 distinct strings), closes_at?"""
    f = fields.mapping(raw)
    question = fields.text(f, "question", 1, MAX_QUESTION_LEN)
    options = f.get("options")
    if not isinstance(options, list) or not 2 <= len(options) <= MAX_OPTIONS:
        raise fields.invalid("options", f"must be a list of 2..{MAX_OPTIONS} strings")
    clean: list[str] = []
    for o in options:
        if not isinstance(o, str) or not o.strip() or len(o) > MAX_OPTION_LEN:
            raise fields.invalid("options", f"each option is a non-empty string of at most {MAX_OPTION_LEN}")
        clean.append(o.strip())
    if len(set(clean)) != len(clean):
        raise fields.invalid("options", "options must differ")
    closes_at = fields.optional_integer(f, "closes_at", now_ms + 1000, now_ms + MAX_OPEN_MS)
    return Poll(poll_id, shop, scope, target, question, clean, by, now_ms, closes_at)
