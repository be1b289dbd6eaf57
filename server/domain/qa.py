"""A live room's question board: ask, upvote, answer, dismiss, overdue flags, answer times.

Sans-I/O: every rule takes `now_ms` and ids from the caller, so the board is the same in the
embedded server, the scale-out one and the unit tests. Questions are distinct from chat
because they are the thing merchants are measured on: "every question answered within five
minutes" (the groups' own rule), hence the overdue flag and the p50/p90 answer time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import Code
from server.domain.errors import SoukError

MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 2000
DEFAULT_ANSWER_TARGET_S = 300

OPEN = "open"
ANSWERED = "answered"
DISMISSED = "dismissed"
STATUSES = (OPEN, ANSWERED, DISMISSED)


def clean_text(value: Any, what: str, limit: int) -> str:
    """Validate user text: a non-blank string of at most `limit` characters, trimmed."""
    if not isinstance(value, str):
        raise SoukError(Code.INVALID, f"{what} must be a string")
    text = value.strip()
    if not text:
        raise SoukError(Code.INVALID, f"{what} must not be empty")
    if len(text) > limit:
        raise SoukError(Code.INVALID, f"{what} is longer than {limit} characters")
    return text


@dataclass
class Question:
    """One question in a room; `answered_by` says who answered and from where (room/group)."""

    id: str
    room: str
    user: str
    name: str
    text: str
    asked_at: int
    votes: int = 0
    voters: set[str] = field(default_factory=set)
    status: str = OPEN
    answer: str | None = None
    answered_by: dict[str, Any] | None = None
    answered_at: int | None = None
    on_stream: bool = False
    overdue_flagged: bool = False
    # the shared store's version of the row (cluster mode): nodes apply a copy only if newer
    rev: int = 0

    def to_event(self) -> dict[str, Any]:
        """The `question` event fields (the same shape in snapshots and in pushes)."""
        out: dict[str, Any] = {
            "id": self.id,
            "room": self.room,
            "user": self.user,
            "name": self.name,
            "text": self.text,
            "votes": self.votes,
            "status": self.status,
            "asked_at": self.asked_at,
        }
        if self.status == ANSWERED:
            out["answer"] = self.answer
            out["answered_by"] = self.answered_by
            out["answered_at"] = self.answered_at
            out["on_stream"] = self.on_stream
        return out


def percentile(samples: list[int], q: float) -> int | None:
    """Nearest-rank percentile (no interpolation: the answer is a time that really happened)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, -(-int(q * 100) * len(ordered) // 100))  # ceil(q * n)
    return ordered[min(rank, len(ordered)) - 1]


class QuestionBoard:
    """The questions of one room, with the room's answer target (seconds)."""

    def __init__(self, room: str, *, target_s: int = DEFAULT_ANSWER_TARGET_S) -> None:
        if (
            not isinstance(target_s, int)
            or isinstance(target_s, bool)
            or not 10 <= target_s <= 86_400
        ):
            raise SoukError(Code.INVALID, "answer target must be 10..86400 seconds")
        self.room = room
        self.target_s = target_s
        self.questions: dict[str, Question] = {}
        self.answer_times_ms: list[int] = []
        self.asked = 0
        # open questions not flagged yet: the overdue timer scans only these, each second
        self._watch: dict[str, Question] = {}

    def set_target(self, target_s: int) -> None:
        if (
            not isinstance(target_s, int)
            or isinstance(target_s, bool)
            or not 10 <= target_s <= 86_400
        ):
            raise SoukError(Code.INVALID, "answer target must be 10..86400 seconds")
        self.target_s = target_s

    # -- commands ---------------------------------------------------------------------
    def ask(self, qid: str, user: str, name: str, text: Any, now_ms: int) -> Question:
        if qid in self.questions:
            raise SoukError(Code.CONFLICT, "question id already used")
        q = Question(
            id=qid,
            room=self.room,
            user=user,
            name=name,
            text=clean_text(text, "question", MAX_QUESTION_CHARS),
            asked_at=now_ms,
        )
        self.add(q)
        return q

    def add(self, q: Question) -> None:
        """Insert a question as it is (used by ask and by load-on-start)."""
        self.questions[q.id] = q
        self.asked += 1
        if q.status == OPEN and not q.overdue_flagged:
            self._watch[q.id] = q
        if q.status == ANSWERED and q.answered_at is not None:
            self.answer_times_ms.append(max(0, q.answered_at - q.asked_at))

    def get(self, qid: Any) -> Question:
        if not isinstance(qid, str) or qid not in self.questions:
            raise SoukError(Code.NOT_FOUND, "no such question in this room")
        return self.questions[qid]

    def upvote(self, qid: Any, user: str) -> Question:
        """One vote per user, never on one's own question, only while it is open."""
        q = self.get(qid)
        if q.status != OPEN:
            raise SoukError(Code.CONFLICT, f"question is {q.status}")
        if q.user == user:
            raise SoukError(Code.FORBIDDEN, "you cannot upvote your own question")
        if user in q.voters:
            raise SoukError(Code.CONFLICT, "already upvoted")
        q.voters.add(user)
        q.votes += 1
        return q

    def answer(
        self,
        qid: Any,
        by: dict[str, Any],
        text: Any,
        now_ms: int,
        *,
        on_stream: bool = False,
    ) -> Question:
        """First answer wins; a second answer is a conflict (a retried request is harmless)."""
        q = self.get(qid)
        if not isinstance(on_stream, bool):
            raise SoukError(Code.INVALID, "on_stream must be a boolean")
        if on_stream and (text is None or text == ""):
            body = "answered on stream"
        else:
            body = clean_text(text, "answer", MAX_ANSWER_CHARS)
        if q.status != OPEN:
            raise SoukError(Code.CONFLICT, f"question is already {q.status}")
        q.status = ANSWERED
        q.answer = body
        q.answered_by = dict(by)
        q.answered_at = now_ms
        q.on_stream = on_stream
        self.answer_times_ms.append(max(0, now_ms - q.asked_at))
        return q

    def dismiss(self, qid: Any) -> Question:
        q = self.get(qid)
        if q.status != OPEN:
            raise SoukError(Code.CONFLICT, f"question is already {q.status}")
        q.status = DISMISSED
        return q

    # -- queries ----------------------------------------------------------------------
    def open_questions(self) -> list[Question]:
        """Open questions, most votes first, then oldest first (the order the host reads)."""
        return sorted(
            (q for q in self.questions.values() if q.status == OPEN),
            key=lambda q: (-q.votes, q.asked_at, q.id),
        )

    def recently_answered(self, n: int = 20) -> list[Question]:
        """The last `n` answered questions, newest answer last (a reloaded page shows them
        under the open ones, as they were before the reload or restart)."""
        done = [q for q in self.questions.values() if q.status == ANSWERED]
        done.sort(key=lambda q: (q.answered_at or 0, q.id))
        return done[-n:] if n > 0 else []

    def is_overdue(self, q: Question, now_ms: int) -> bool:
        return q.status == OPEN and now_ms - q.asked_at > self.target_s * 1000

    def newly_overdue(self, now_ms: int) -> list[Question]:
        """Open questions past the target not flagged yet; flags them (each flagged once)."""
        out = []
        for q in list(self._watch.values()):
            if q.status != OPEN or q.overdue_flagged:
                del self._watch[q.id]
            elif self.is_overdue(q, now_ms):
                q.overdue_flagged = True
                del self._watch[q.id]
                out.append(q)
        out.sort(key=lambda q: q.asked_at)
        return out

    def stats(self, now_ms: int) -> dict[str, Any]:
        """Numbers for `GET /api/rooms/<id>/stats`; overdue counts questions late now or ever."""
        target_ms = self.target_s * 1000
        answered = len(self.answer_times_ms)
        within = sum(1 for t in self.answer_times_ms if t <= target_ms)
        overdue_open = sum(1 for q in self.questions.values() if self.is_overdue(q, now_ms))
        answered_late = answered - within
        return {
            "questions_asked": self.asked,
            "questions_answered": answered,
            "questions_dismissed": sum(1 for q in self.questions.values() if q.status == DISMISSED),
            "questions_open": sum(1 for q in self.questions.values() if q.status == OPEN),
            "answer_time_p50_ms": percentile(self.answer_times_ms, 0.5),
            "answer_time_p90_ms": percentile(self.answer_times_ms, 0.9),
            "overdue_open": overdue_open,
            "overdue_count": overdue_open + answered_late,
            "answered_within_target": (within / answered) if answered else None,
            "answer_target_s": self.target_s,
        }
