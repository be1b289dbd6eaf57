"""Questions and answers: a room's board, its mirrored copies in groups, answers from anywhere.

Why: the Q&A ops (`ask`, `upvote`, `answer`, `dismiss`), the answers that come back from a
group reply (`on_group_chat`) or a connector (`answer_from_connector`), and what a client sees
of them (snapshots, stats) all change or read the same boards and mirror copies, under the same
rule: a change is committed before its events are published, and a failed or refused commit
rolls the domain back (in a cluster: the committed row is adopted). The rules themselves live
in server/domain/qa.py and server/domain/mirror.py.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from client_sdk.protocol import Code
from server.community.cluster import ClusterCopies
from server.community.connectors import answer_item, question_item
from server.community.frames import _new_id, _require_staff, _user
from server.connectors.formats import Connector
from server.domain.community import Group
from server.domain.mirror import Mirror
from server.domain.qa import MAX_ANSWER_CHARS, OPEN, Question, QuestionBoard, clean_text
from server.errors import SoukError
from server.store.community import Stale

MAX_MESSAGE_CHARS = 2000


class QuestionsAndAnswers(ClusterCopies):
    """The Q&A part of `Community` (adapter.py)."""

    # group chat message ids already handled (a redelivered message does nothing); assigned
    # by `Community.__init__`
    _seen_messages: OrderedDict[str, None]

    async def set_answer_target(self, room: str, target_s: int) -> None:
        """A room's response target in seconds (default 300), kept across restarts."""
        self.board(room).set_target(target_s)
        await self.store.set_answer_target(room, target_s)
        self._notify("target", room=room)

    # -- the ops ----------------------------------------------------------------------
    async def ask(self, room: str, user: dict[str, Any], text: Any) -> dict[str, Any]:
        uid, name, role = _user(user)
        board = self.board(room)
        if isinstance(text, str):
            self.filter.check(text, role)
        q = board.ask(_new_id("q"), uid, name, text, self.clock_ms())
        copies = self.mirror.mirror_question(q, self.directory, lambda: _new_id("m"))
        try:
            await self.store.save_question(q, copies)
        except Exception:
            board.questions.pop(q.id, None)
            board.asked -= 1
            for c in copies:
                self.mirror.by_id.pop(c.id, None)
                self.mirror.copies.get((room, q.id), {}).pop(c.group, None)
            raise
        self._emit(self.mirror.question_events(q))
        self.hub.to_room(room, question_item(q))
        self._notify_question(q, copies)
        return q.to_event()

    async def mirror_again(self, room: str, qid: str) -> int:
        """Re-run mirroring for a question (after a replay or resume): makes only missing copies."""
        q = self.board(room).get(qid)
        copies = self.mirror.mirror_question(q, self.directory, lambda: _new_id("m"))
        if copies:
            await self.store.save_question(q, copies)
            self._emit(self.mirror.question_events(q, only=copies, to_room=False))
            self._notify_question(q, copies)
        return len(copies)

    async def upvote(self, room: str, user: dict[str, Any], qid: Any) -> dict[str, Any]:
        uid, _, _ = _user(user)
        q = self.board(room).upvote((await self._question(room, qid)).id, uid)
        try:
            fresh = await self.store.upvote(q, uid)
        except Stale as exc:  # another node counted this vote, or closed the question
            q.voters.discard(uid)
            q.votes -= 1
            if exc.question is not None:
                self._adopt(exc.question, force=True)
            raise SoukError(exc.code, exc.message) from None
        except Exception:
            q.voters.discard(uid)
            q.votes -= 1
            raise
        if fresh is not q:  # the count as committed, whatever node voted meanwhile
            self._adopt(fresh, force=True)
        self._emit(self.mirror.question_events(q, droppable=True))
        self._notify_question(q, voter=uid)
        return q.to_event()

    async def answer(
        self, room: str, user: dict[str, Any], qid: Any, text: Any, on_stream: bool = False
    ) -> dict[str, Any]:
        """The streamer or a moderator answers in the room; every group copy is updated."""
        uid, name, role = _user(user)
        _require_staff(user, "answer questions")
        by = {"user": uid, "name": name, "role": role, "via": "room"}
        qid = (await self._question(room, qid)).id
        q = self.board(room).answer(qid, by, text, self.clock_ms(), on_stream=on_stream)
        await self._answered(q, skip_group=None, skip_connector=None)
        return q.to_event()

    async def dismiss(self, room: str, user: dict[str, Any], qid: Any) -> dict[str, Any]:
        _require_staff(user, "dismiss questions")
        q = self.board(room).dismiss((await self._question(room, qid)).id)
        try:
            await self.store.close_question(q)
        except Stale as exc:
            q.status = OPEN
            if exc.question is not None:
                self._adopt(exc.question, force=True)
            raise SoukError(exc.code, exc.message) from None
        except Exception:
            q.status = OPEN
            raise
        self._emit(self.mirror.question_events(q))
        self._notify_question(q)
        return q.to_event()

    # -- answers: from the room, a group reply or a connector ---------------------------
    async def _answered(
        self, q: Question, *, skip_group: str | None, skip_connector: str | None
    ) -> None:
        try:
            await self.store.close_question(q)
        except Stale as exc:  # another node answered first: its answer stands
            self._undo_answer(q)
            if exc.question is not None:
                self._adopt(exc.question, force=True)
            raise SoukError(exc.code, exc.message) from None
        except Exception:
            self._undo_answer(q)
            raise
        self._publish_answer(q, skip_group=skip_group, skip_connector=skip_connector)
        self._notify_question(q)

    def _undo_answer(self, q: Question) -> None:
        """Roll the domain back when the answer could not be made durable."""
        q.status, q.answer, q.answered_by, q.answered_at = "open", None, None, None
        q.on_stream = False
        times = self.boards[q.room].answer_times_ms
        if times:
            times.pop()

    def _publish_answer(
        self, q: Question, *, skip_group: str | None, skip_connector: str | None
    ) -> None:
        self._emit(self.mirror.question_events(q, skip_group=skip_group))
        self.hub.to_room(q.room, answer_item(q), skip=skip_connector)

    async def on_group_chat(
        self, group_id: str, user: dict[str, Any], message: dict[str, Any]
    ) -> None:
        """After the gateway accepted a group `chat`: keep it, and flow answers back.

        `message` is the chat event ({id, user, name, text, reply_to?, ts?}). A reply to a
        mirrored question answers the origin question in the room (first answer wins); the
        other groups' copies are updated, the group it came from gets no echo. Calling twice
        with the same message id does nothing the second time.
        """
        uid, name, _ = _user(user)
        mid = message.get("id")
        text = message.get("text")
        if not isinstance(mid, str) or not isinstance(text, str):
            raise SoukError(Code.INVALID, "message needs a string id and text")
        seen = f"{group_id}:{mid}"  # message ids count per group: "m1" is in every group
        if seen in self._seen_messages:
            return
        self._seen_messages[seen] = None
        if len(self._seen_messages) > 100_000:
            self._seen_messages.popitem(last=False)
        reply_to = message.get("reply_to")
        ts = message.get("ts")
        record = {
            "id": mid,
            "user": uid,
            "name": name,
            "text": text[:MAX_MESSAGE_CHARS],
            "reply_to": reply_to if isinstance(reply_to, str) else None,
            "ts": ts if isinstance(ts, int) else self.clock_ms(),
        }
        q = await self._answer_by_reply(group_id, uid, name, text, reply_to)
        try:  # the message and the answer it gives are one transaction: one commit, not two
            kept = await self.store.add_message(group_id, record, answered=q)
        except Exception:
            self._seen_messages.pop(seen, None)  # not kept: a retry must be able to keep it
            if q is not None:
                self._undo_answer(q)
            raise
        if q is not None and not kept:  # answered on another node first: just chat
            self._undo_answer(q)
            await self._reload_question(q.id)
            return
        if q is not None:
            self._publish_answer(q, skip_group=group_id, skip_connector=None)
            self._notify_question(q)

    async def _answer_by_reply(
        self, group_id: str, uid: str, name: str, text: str, reply_to: Any
    ) -> Question | None:
        """Apply a group reply to a mirrored question in the domain; None if it is just chat."""
        copy = self.mirror.resolve_reply(group_id, reply_to)
        if copy is None and self.store.shared and isinstance(reply_to, str) and reply_to:
            # a copy made on another node whose notice has not arrived: ask the record
            qid = await self.store.question_of_copy(reply_to[:64])
            if qid is not None:
                await self._reload_question(qid)
                copy = self.mirror.resolve_reply(group_id, reply_to)
        if copy is None:
            return None
        board = self.boards.get(copy.room)
        if board is None or copy.question not in board.questions:
            return None
        group = self.directory.groups.get(group_id)
        by = {
            "user": uid,
            "name": name,
            "via": "group",
            "group": group_id,
            "group_topic": group.topic if group else None,
        }
        try:
            body = clean_text(text, "answer", MAX_ANSWER_CHARS)
            return board.answer(copy.question, by, body, self.clock_ms())
        except SoukError:
            return None  # already answered or dismissed: the reply stays a chat message

    async def answer_from_connector(self, conn: Connector, data: dict[str, Any]) -> dict[str, Any]:
        """An answer posted (signed) by an external group: answers the room question."""
        qid = data.get("question")
        name = data.get("name", "external")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise SoukError(Code.INVALID, "name must be 1..64 characters")
        ext_user = data.get("user")
        if ext_user is not None and (not isinstance(ext_user, str) or len(ext_user) > 64):
            raise SoukError(Code.INVALID, "user must be a string of at most 64 characters")
        board = self.board(conn.room)
        if isinstance(qid, str) and qid:
            qid = (await self._question(conn.room, qid)).id
        by = {
            "user": ext_user,
            "name": name,
            "via": "connector",
            "connector": conn.id,
            "platform": conn.platform,
        }
        q = board.answer(qid, by, data.get("text"), self.clock_ms())
        await self._answered(q, skip_group=None, skip_connector=conn.id)
        return q.to_event()

    # -- snapshots and stats ----------------------------------------------------------
    def room_snapshot(self, room: str) -> dict[str, Any]:
        board = self.boards.get(room)
        if board is None:
            return {"questions": []}
        return {"questions": [q.to_event() for q in [*board.open_questions(), *board.recently_answered()]]}

    def group_snapshot(self, group_id: str, *, limit: int = 50) -> dict[str, Any]:
        """Mirrored questions (open first by votes, then recent answered), members, the group."""
        group: Group = self.directory.get(group_id)
        items = []
        for copy in self.mirror.copies_in(group_id):
            board = self.boards.get(copy.room)
            q = board.questions.get(copy.question) if board else None
            if q is not None and q.status != "dismissed":
                items.append((q, copy))
        items.sort(
            key=lambda p: (
                p[0].status != "open",
                -p[0].votes if p[0].status == "open" else -p[0].asked_at,
                p[0].asked_at,
            )
        )
        return {
            "questions": [Mirror.copy_fields(q, c) for q, c in items[:limit]],
            "members": len(group.members),
            "group": group.to_dict(),
            "notices": list(group.recent_notices),
        }

    async def room_stats(self, room: str) -> dict[str, Any]:
        board = self.boards.get(room) or QuestionBoard(room, target_s=self.answer_target_s)
        out = board.stats(self.clock_ms())
        out["linked_groups"] = self.mirror.linked(room)
        out["answered_in_groups"] = sum(
            1
            for q in board.questions.values()
            if q.answered_by and q.answered_by.get("via") == "group"
        )
        return out

