"""The asyncio adapter for Q&A, community groups, mirroring and connectors.

The gateway calls these methods for the ops `ask`, `upvote`, `answer`, `dismiss`,
`group_create`, `group_join`, `group_leave`, `group_members`, `link_groups`, `notice`,
`connector_create`, and after it accepted a group `chat` (`on_group_chat`). The rules live in
`server/domain/` (qa, community, mirror, moderation); this layer adds what they must not know:
the clock, ids, durability (every change is committed before its events are published, so
what a client saw survives a restart), the publish callback, the overdue timer and the
connectors (outbound delivery, inbound listener). See docs/community.md.

In a cluster (`--postgres`, server/store/community_pg.py) the domain objects are this node's
working copy of a shared record: the writes that can race are guarded in SQL and a refusal
(`Stale`) makes this node adopt the committed row before it answers; after a commit the node
tells the others (`ClusterSync`, server/community_sync.py) and they update their copies; a
question, group or connector this node does not know is loaded before it says not_found. Only
the node that served an op publishes its events, mirrors a question and hands it to the
connectors, so each happens once per cluster. See docs/scaleout.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from server.bus.base import Publish
from server.community_sync import ClusterSync, Notice
from server.connectors.delivery import Delivery
from server.connectors.formats import Connector, parse_connector
from server.connectors.inbound import InboundListener
from server.domain.community import STAFF_ROLES, Directory, Group
from server.domain.mirror import MAX_LINKED_GROUPS, Copy, Event, Mirror
from server.domain.moderation import Action, FilterConfig, Ladder, LinkFilter
from server.domain.qa import ANSWERED, MAX_ANSWER_CHARS, OPEN, Question, QuestionBoard, clean_text
from server.errors import SoukError
from server.store.community_pg import PgCommunityStore
from server.store.community_store import SCHEMA, CommunityStore, SqliteCommunityStore, Stale
from server.store.sqlite import SqliteDatabase

log = logging.getLogger("souk.community")

NOTICE_KINDS = ("sale", "teambuy", "coupon", "info")
MAX_NOTICE_CHARS = 1000
MAX_MESSAGE_CHARS = 2000


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


def _user(user: dict[str, Any]) -> tuple[str, str, str]:
    uid, name, role = user.get("id"), user.get("name"), user.get("role")
    if not isinstance(uid, str) or not uid:
        raise SoukError("invalid", "user id required")
    return uid, (name if isinstance(name, str) and name else uid)[:64], str(role or "viewer")


OPS = (
    "ask",
    "upvote",
    "answer",
    "dismiss",
    "group_create",
    "group_join",
    "group_leave",
    "remove",
    "group_members",
    "link_groups",
    "notice",
    "connector_create",
)


def _field(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise SoukError("invalid", f"{key} must be a string of 1..64 characters")
    return value


def _opt_field(frame: dict[str, Any], key: str) -> str | None:
    return None if frame.get(key) is None else _field(frame, key)


def _shop(shop: str | None) -> str:
    if not shop:
        raise SoukError("invalid", "this op needs the room's shop")
    return shop


def _require_staff(user: dict[str, Any], what: str) -> None:
    if user.get("role") not in STAFF_ROLES:
        raise SoukError("forbidden", f"only the streamer, moderators and admins may {what}")


class Community:
    """Q&A boards, groups, mirroring and connectors for one server process.

    Construct before `db.start()` (the tables are registered with `db.add_schema`); when the
    database is already running, `start()` creates them itself.
    `webhook_port`: None = no inbound listener; 0 = an ephemeral port (tests); otherwise the
    `--webhook-port`. The listener starts only once a connector exists.
    """

    def __init__(
        self,
        db: SqliteDatabase | None,
        publish: Publish,
        clock_ms: Callable[[], int],
        *,
        answer_target_s: int = 300,
        welfare_weekly_cap: int = 3,
        filter_config: FilterConfig | None = None,
        webhook_host: str = "127.0.0.1",
        webhook_port: int | None = None,
        overdue_check_s: float = 1.0,
        connector_max_attempts: int = 5,
        connector_backoff_s: float = 0.5,
        connector_max_backoff_s: float = 60.0,
        store: CommunityStore | None = None,
        sync: ClusterSync | None = None,
    ) -> None:
        self.db = db
        if store is None:
            if db is None:
                raise ValueError("Community needs a SQLite database or a store")
            store = SqliteCommunityStore(db)
        elif db is not None:
            db.add_schema(SCHEMA)  # the embedded tables stay (empty) for the features reading them
        self.store: CommunityStore = store
        # the shared store of a cluster: lazy loads and reloads come from it
        self.pg = store if isinstance(store, PgCommunityStore) else None
        self.sync = sync
        self.publish = publish
        self.clock_ms = clock_ms
        self.answer_target_s = answer_target_s
        self.directory = Directory(welfare_weekly_cap=welfare_weekly_cap)
        self.mirror = Mirror()
        self.boards: dict[str, QuestionBoard] = {}
        self.filter = LinkFilter(filter_config)
        self.ladders: dict[str, Ladder] = {}
        self.connectors: dict[str, Connector] = {}
        self.delivery = Delivery(
            clock_ms,
            self._dead_letter,
            max_attempts=connector_max_attempts,
            base_backoff_s=connector_backoff_s,
            max_backoff_s=connector_max_backoff_s,
        )
        self.webhook_host = webhook_host
        self.webhook_port = webhook_port
        self.inbound: InboundListener | None = None
        self.overdue_check_s = overdue_check_s
        self._overdue_task: asyncio.Task[None] | None = None
        self._seen_messages: OrderedDict[str, None] = OrderedDict()

    # -- the ops, from a frame -----------------------------------------------------------
    async def dispatch(
        self, op: str, user: dict[str, Any], frame: dict[str, Any], *, shop: str | None = None
    ) -> dict[str, Any]:
        """Run one of OPS from a client frame; returns the `ok` reply's fields.

        For the gateway: it checks auth and room/group access as for every op, then hands the
        frame here. Every field is validated; refusals are SoukError with a protocol code.
        `shop` is the room's (or the admin's) shop, needed by group_create, link_groups,
        group_join by tier+topic and connector_create.
        """
        role = user.get("role")
        if op == "ask":
            return {"question": await self.ask(_field(frame, "room"), user, frame.get("text"))}
        if op == "upvote":
            q = await self.upvote(_field(frame, "room"), user, frame.get("question"))
            return {"question": q}
        if op == "answer":
            on_stream = frame.get("on_stream", False)
            q = await self.answer(
                _field(frame, "room"), user, frame.get("question"), frame.get("text"), on_stream
            )
            return {"question": q}
        if op == "dismiss":
            return {
                "question": await self.dismiss(_field(frame, "room"), user, frame.get("question"))
            }
        if op == "group_create":
            if role not in ("streamer", "admin"):
                raise SoukError("forbidden", "only streamers and admins create groups")
            return {"group": await self.group_create(_shop(shop), frame)}
        if op == "group_join":
            gid = frame.get("group")
            group = await self.group_join(
                user,
                _field(frame, "group") if gid is not None else None,
                frame.get("tier"),
                frame.get("topic"),
                shop=shop,
                source=_opt_field(frame, "source"),
                invited_by=_opt_field(frame, "invited_by"),
            )
            return {"group": group}
        if op == "group_leave":
            await self.group_leave(_user(user)[0], _field(frame, "group"))
            return {}
        if op == "remove":
            await self.group_remove(user, _field(frame, "user"), _field(frame, "group"))
            return {}
        if op == "group_members":
            gid = _field(frame, "group")
            await self._group(gid)
            members = self.group_members(gid)
            if role in STAFF_ROLES:
                return {"members": members}
            if not self.is_member(_user(user)[0], gid):
                raise SoukError("forbidden", "only members and staff see a group's members")
            # tags are the merchant's knowledge of a member: staff only
            return {"members": [{k: v for k, v in m.items() if k != "tags"} for m in members]}
        if op == "link_groups":
            if role not in ("streamer", "admin"):
                raise SoukError("forbidden", "only streamers and admins link groups")
            room = _field(frame, "room")
            return {"groups": await self.link_groups(room, frame.get("groups"), shop=shop)}
        if op == "notice":
            to_group, to_room = _opt_field(frame, "group"), _opt_field(frame, "room")
            return await self.notice(
                user, frame.get("kind"), frame.get("text"), group=to_group, room=to_room
            )
        if op == "connector_create":
            if role != "admin":
                raise SoukError("forbidden", "only admins create connectors")
            return {"connector": await self.connector_create(_shop(shop), frame, user)}
        raise SoukError("unknown_op", f"not a community op: {op}")

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.start()
        if self.sync is not None:  # subscribed before the load: nothing committed is missed
            await self.sync.start()
        raws = await self.store.load(self.directory, self.boards, self.mirror, self.answer_target_s)
        for raw in raws:
            self._add_connector(raw)
        await self.delivery.start()
        if self.connectors:
            await self._ensure_inbound()
        if self.sync is not None:
            self.sync.run(self.apply_notice)
        self._overdue_task = asyncio.create_task(self._overdue_loop(), name="qa-overdue")

    def _add_connector(self, raw: dict[str, Any]) -> Connector:
        conn = Connector(
            raw["id"],
            raw["shop"],
            raw["room"],
            raw["platform"],
            raw["url"],
            raw["secret"],
            raw["created_at"],
            raw["config"],
        )
        self.connectors[conn.id] = conn
        self.delivery.add(conn)
        return conn

    async def stop(self) -> None:
        if self._overdue_task is not None:
            self._overdue_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._overdue_task
            self._overdue_task = None
        if self.inbound is not None:
            await self.inbound.stop()
            self.inbound = None
        for conn, item in await self.delivery.stop():
            await self._dead_letter(conn, item, "not delivered before shutdown", 0)
        if self.sync is not None:
            await self.sync.stop()
        await self.store.close()

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            self.publish(ev.ch, ev.type, ev.fields, droppable=ev.droppable)

    def board(self, room: str) -> QuestionBoard:
        if not isinstance(room, str) or not 1 <= len(room) <= 64:
            raise SoukError("invalid", "room must be a string of 1..64 characters")
        b = self.boards.get(room)
        if b is None:
            b = self.boards[room] = QuestionBoard(room, target_s=self.answer_target_s)
        return b

    async def set_answer_target(self, room: str, target_s: int) -> None:
        """A room's response target in seconds (default 300), kept across restarts."""
        self.board(room).set_target(target_s)
        await self.store.set_answer_target(room, target_s)
        self._notify("target", room=room)

    # -- moderation -------------------------------------------------------------------
    def check_text(self, text: str, role: str | None) -> None:
        """Raise SoukError("filtered") for links/ads from non-staff (room chat, questions)."""
        self.filter.check(text, role)

    def check_group_chat(self, group_id: str, user: dict[str, Any], text: str) -> None:
        """May this user post this text in this group? (membership, welfare, filter)."""
        self.directory.check_post(group_id, user)
        self.filter.check(text, user.get("role"))

    async def offence(self, scope: str, user_id: str) -> dict[str, Any]:
        """Record a rule break in a room or group (`room:<id>`/`group:<id>`): warn → mute → remove.

        Removal from a group is applied here; mute is applied by the caller (the room's mute).
        """
        action: Action = self.ladders.setdefault(scope, Ladder()).offend(user_id, self.clock_ms())
        if action.kind == "remove" and scope.startswith("group:"):
            gid = scope.split(":", 1)[1]
            if self.directory.is_member(user_id, gid):
                await self._drop_member(user_id, gid, removed=True)
        return {"action": action.kind, "seconds": action.seconds, "offences": action.offences}

    # -- groups -----------------------------------------------------------------------
    async def group_create(self, shop: str, fields: dict[str, Any]) -> dict[str, Any]:
        group = self.directory.create_group(_new_id("g"), shop, fields, self.clock_ms())
        try:
            await self.store.create_group(group)
        except Exception:
            self.directory.groups.pop(group.id, None)
            raise
        self._notify("g", id=group.id)
        return group.to_dict()

    async def group_join(
        self,
        user: dict[str, Any],
        group_id: str | None = None,
        tier: str | None = None,
        topic: str | None = None,
        *,
        shop: str | None = None,
        source: str | None = None,
        invited_by: str | None = None,
    ) -> dict[str, Any]:
        """Make the user a member (spill-over applies); returns the group they landed in."""
        uid, name, role = _user(user)
        if role not in ("member", *STAFF_ROLES):
            raise SoukError("forbidden", "only members may join groups")
        if group_id is not None:
            await self._group(group_id)
        attempts = 20 if self.pg is not None else 1
        for attempt in range(attempts):
            now = self.clock_ms()
            result = self.directory.join(
                {"id": uid, "name": name, "role": role},
                now,
                lambda: _new_id("g"),
                group_id=group_id,
                tier=tier,
                topic=topic,
                shop=shop,
            )
            group = result.group
            if result.already_member:
                return {**group.to_dict(), "spilled": False, "already_member": True}
            tags = None
            if source is not None or invited_by is not None:
                tags = self.directory.update_tags(
                    group.shop, uid, {"source": source, "invited_by": invited_by}
                )
            try:
                await self.store.add_member(group, result.member, result.created, tags, group.shop)
            except Stale as exc:
                # another node placed members first: reload the family and place again
                group.members.pop(uid, None)
                if result.created is not None:
                    self.directory.groups.pop(result.created.id, None)
                if attempt == attempts - 1:
                    raise SoukError(
                        "unavailable", f"group placement kept racing: {exc.message}"
                    ) from None
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # let the winner finish
                await self._reload_family(group.shop, group.tier, group.topic)
                continue
            except Exception:
                group.members.pop(uid, None)
                if result.created is not None:
                    self.directory.groups.pop(result.created.id, None)
                raise
            break
        group.members[uid] = result.member  # committed (a reload meanwhile may have missed it)
        self._notify("g", id=group.id)
        if result.created is not None:
            # a spill-over group inherits the room links of its siblings (same tier and topic)
            rooms = {
                room
                for sib in self.directory.siblings(group.shop, group.tier, group.topic)
                for room in self.mirror.rooms_of(sib.id)
            }
            for room in sorted(rooms):
                try:
                    self.mirror.link(room, [group.id], self.directory, None)
                except SoukError as exc:  # the room is at its link limit: say so, keep the member
                    log.warning("spill-over group %s not linked to %s: %s", group.id, room, exc)
                    continue
                await self.store.save_links(room, self.mirror.linked(room))
                self._notify("links", room=room)
        self.publish(
            f"group:{group.id}",
            "member_joined",
            {"user": uid, "name": name, "members": len(group.members)},
            droppable=True,
        )
        if result.over_ideal:
            log.info("group %s has %d members (ideal at most 200)", group.id, len(group.members))
        return {
            **group.to_dict(),
            "spilled": group_id is not None and group.id != group_id,
            "created": result.created is not None,
        }

    async def group_leave(self, user_id: str, group_id: str) -> None:
        await self._drop_member(user_id, group_id, removed=False)

    async def group_remove(self, by: dict[str, Any], user_id: str, group_id: str) -> None:
        """Moderator removal (the ladder's last step): the member may not rejoin the group."""
        _require_staff(by, "remove members")
        await self._drop_member(user_id, group_id, removed=True)

    async def _drop_member(self, user_id: str, group_id: str, *, removed: bool) -> None:
        group = await self._group(group_id, user=user_id)
        member = (
            self.directory.remove(user_id, group_id)
            if removed
            else self.directory.leave(user_id, group_id)
        )
        try:
            await self.store.remove_member(group_id, member, self.clock_ms(), removed)
        except Exception:
            group.members[user_id] = member
            group.removed.discard(user_id)
            raise
        self._notify("g", id=group_id)
        self.publish(
            f"group:{group_id}",
            "member_left",
            {"user": user_id, "members": len(group.members), "removed": removed},
            droppable=True,
        )

    def group_members(self, group_id: str) -> list[dict[str, Any]]:
        group = self.directory.get(group_id)
        return [
            {**m.to_dict(), "tags": self.directory.tags_of(group.shop, m.user).to_dict()}
            for m in sorted(group.members.values(), key=lambda m: (m.joined_at, m.user))
        ]

    def is_member(self, user_id: str, group_id: str) -> bool:
        return self.directory.is_member(user_id, group_id)

    def groups(self, shop: str) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self.directory.groups.values() if g.shop == shop]

    async def update_tags(self, shop: str, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.pg is not None:  # merge into what the cluster has, not into a stale copy
            fresh = await self.pg.load_tags(shop, user_id)
            if fresh is not None:
                self.directory.tags[(shop, user_id)] = fresh
        tags = self.directory.update_tags(shop, user_id, fields)
        await self.store.save_tags(shop, user_id, tags)
        self._notify("tags", shop=shop, user=user_id)
        return tags.to_dict()

    async def tag_purchase(
        self, shop: str, user_id: str, product: str, *, big: bool | None = None
    ) -> None:
        """The commerce side calls this on a confirmed order: tags follow what members buy."""
        fields: dict[str, Any] = {"bought": product}
        if big is not None:
            fields["big_customer"] = big
        await self.update_tags(shop, user_id, fields)

    async def link_groups(self, room: str, group_ids: Any, *, shop: str | None = None) -> list[str]:
        """Link groups to a room; returns every group now linked. Mirroring applies from now."""
        self.board(room)
        if self.pg is not None and isinstance(group_ids, list):
            await self._reload_links(room)  # add to the cluster's links, not a stale copy
            for gid in group_ids[: MAX_LINKED_GROUPS + 1]:
                if isinstance(gid, str) and 1 <= len(gid) <= 64:
                    with contextlib.suppress(SoukError):
                        await self._group(gid)
        self.mirror.link(room, group_ids, self.directory, shop)
        linked = self.mirror.linked(room)
        await self.store.save_links(room, linked)
        self._notify("links", room=room)
        return linked

    # -- Q&A --------------------------------------------------------------------------
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
        self._to_connectors(room, self._question_item(q))
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
            if self.pg is not None:
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
            if self.pg is not None:
                q.status = OPEN
            raise
        self._emit(self.mirror.question_events(q))
        self._notify_question(q)
        return q.to_event()

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
        self._to_connectors(q.room, self._answer_item(q), skip=skip_connector)

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
            raise SoukError("invalid", "message needs a string id and text")
        if mid in self._seen_messages:
            return
        self._seen_messages[mid] = None
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
        if copy is None and self.pg is not None and isinstance(reply_to, str) and reply_to:
            # a copy made on another node whose notice has not arrived: ask the record
            qid = await self.pg.question_of_copy(reply_to[:64])
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
            raise SoukError("invalid", "name must be 1..64 characters")
        ext_user = data.get("user")
        if ext_user is not None and (not isinstance(ext_user, str) or len(ext_user) > 64):
            raise SoukError("invalid", "user must be a string of at most 64 characters")
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

    # -- notices ----------------------------------------------------------------------
    async def notice(
        self,
        user: dict[str, Any],
        kind: Any,
        text: Any,
        *,
        group: str | None = None,
        room: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A merchant notice to one group, or to every group linked to a room.

        To one welfare group above its weekly cap: error cap_reached. To a room's groups:
        welfare groups at their cap are skipped and listed in `skipped`.
        """
        _require_staff(user, "post notices")
        return await self._notice(kind, text, group=group, room=room, extra=extra)

    async def _notice(
        self,
        kind: Any,
        text: Any,
        *,
        group: str | None,
        room: str | None,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if kind not in NOTICE_KINDS:
            raise SoukError("invalid", f"kind must be one of {', '.join(NOTICE_KINDS)}")
        body = clean_text(text, "notice", MAX_NOTICE_CHARS)
        if (group is None) == (room is None):
            raise SoukError("invalid", "give either a group or a room")
        now = self.clock_ms()
        sent: list[str] = []
        skipped: list[dict[str, Any]] = []
        targets = (
            [group] if group is not None else self.mirror.notice_targets(str(room), self.directory)
        )
        for gid in targets:
            try:
                self.directory.record_notice(gid, now)
            except SoukError as exc:
                if group is not None:
                    raise
                skipped.append({"group": gid, "code": exc.code})
                continue
            await self.store.add_notice(gid, str(kind), body, now)
            self._notify("g", id=gid)
            fields = {"kind": kind, "text": body, "group": gid, "ts": now, **(extra or {})}
            if room is not None:
                fields["room"] = room
            self.publish(f"group:{gid}", "notice", fields)
            sent.append(gid)
        if room is not None:
            self._to_connectors(
                room, {"type": "notice", "kind": kind, "text": body, "room": room, **(extra or {})}
            )
        return {"sent": sent, "skipped": skipped}

    async def on_sale_started(self, room: str, sale: dict[str, Any]) -> dict[str, Any]:
        """Commerce calls this when a flash sale goes live: linked groups get a notice."""
        title = sale.get("title") or sale.get("product") or "a product"
        price = sale.get("price")
        currency = sale.get("currency", "")
        price_txt = f" at {price / 100:.2f} {currency}".rstrip() if isinstance(price, int) else ""
        text = f"Flash sale live now: {title}{price_txt}"
        extra = {"sale": sale.get("id"), "ends_at": sale.get("ends_at")}
        return await self._notice("sale", text, group=None, room=room, extra=extra)

    async def on_teambuy_started(self, room: str, offer: dict[str, Any]) -> dict[str, Any]:
        title = offer.get("title") or offer.get("product") or "a product"
        text = f"Team buy open: {title}, teams of {offer.get('size', '?')}"
        return await self._notice(
            "teambuy", text, group=None, room=room, extra={"offer": offer.get("id")}
        )

    # -- snapshots and stats ----------------------------------------------------------
    def room_snapshot(self, room: str) -> dict[str, Any]:
        board = self.boards.get(room)
        return {"questions": [q.to_event() for q in board.open_questions()] if board else []}

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

    async def recent_group_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.recent_messages(group_id, limit)

    # -- cluster: keeping this node's copies in step ------------------------------------
    def _notify(self, kind: str, **fields: Any) -> None:
        """Tell the other nodes of the cluster that an entity changed (after the commit)."""
        if self.sync is not None:
            self.sync.notify(kind, **fields)

    def _notify_question(
        self, q: Question, copies: list[Copy] | None = None, *, voter: str | None = None
    ) -> None:
        if self.sync is None:
            return
        wire = {k: v for k, v in q.to_event().items() if k != "on_stream"}
        wire.update(
            on_stream=q.on_stream,
            answer=q.answer,
            answered_by=q.answered_by,
            answered_at=q.answered_at,
            overdue_flagged=q.overdue_flagged,
            rev=q.rev,
        )
        notice: dict[str, Any] = {"q": wire}
        if copies:
            notice["copies"] = [[c.id, c.group] for c in copies]
        if voter is not None:
            notice["voter"] = voter
        self.sync.notify("q", **notice)

    def _adopt(
        self,
        fresh: Question,
        copies: list[Copy] | None = None,
        *,
        force: bool = False,
        full_voters: bool = False,
    ) -> Question:
        """Make this node's copy of a question the committed one (if newer, or `force`).

        `fresh.voters` is every voter when `full_voters` (a load), else the ones this update
        is known to add (a vote); the count is always the committed `votes`.
        """
        board = self.board(fresh.room)
        for copy in copies or ():
            if copy.id not in self.mirror.by_id:
                self.mirror.add_copy(copy)
        local = board.questions.get(fresh.id)
        if local is None:
            board.add(fresh)
            return fresh
        if full_voters:
            local.voters = set(fresh.voters)
        else:
            local.voters |= fresh.voters
        if not force and fresh.rev <= local.rev:
            return local
        was_open = local.status == OPEN
        local.votes = fresh.votes
        local.status = fresh.status
        local.answer = fresh.answer
        local.answered_by = fresh.answered_by
        local.answered_at = fresh.answered_at
        local.on_stream = fresh.on_stream
        local.overdue_flagged = local.overdue_flagged or fresh.overdue_flagged
        local.rev = max(local.rev, fresh.rev)
        if was_open and local.status == ANSWERED and local.answered_at is not None:
            board.answer_times_ms.append(max(0, local.answered_at - local.asked_at))
        return local

    async def _reload_question(self, qid: str) -> Question | None:
        if self.pg is None:
            return None
        got = await self.pg.load_question(qid)
        if got is None:
            return None
        return self._adopt(got[0], got[1], force=True, full_voters=True)

    async def _question(self, room: str, qid: Any) -> Question:
        """The question `qid` of `room`; in a cluster, one asked on another node is loaded
        from the shared store before this node says not_found."""
        board = self.board(room)
        if (
            self.pg is not None
            and isinstance(qid, str)
            and 1 <= len(qid) <= 64
            and qid not in board.questions
        ):
            q = await self._reload_question(qid)
            if q is not None and q.room != room:
                raise SoukError("not_found", "no such question in this room")
        return board.get(qid)

    async def _group(self, gid: Any, *, user: str | None = None) -> Group:
        """The group `gid`; in a cluster reloaded first when this node does not know it (or
        does not know `user` in it: they may have joined through another node)."""
        if self.pg is not None and isinstance(gid, str) and 1 <= len(gid) <= 64:
            known = self.directory.groups.get(gid)
            if known is None or (user is not None and user not in known.members):
                await self._reload_group(gid)
        return self.directory.get(gid)

    def _put_group(self, fresh: Group) -> None:
        """Adopt a group as committed, keeping the object other code may hold."""
        known = self.directory.groups.get(fresh.id)
        if known is None:
            self.directory.groups[fresh.id] = fresh
            return
        known.title, known.cap = fresh.title, fresh.cap
        known.members = fresh.members
        known.removed = fresh.removed
        known.notices_at = fresh.notices_at

    async def _reload_group(self, gid: str) -> None:
        if self.pg is not None:
            fresh = await self.pg.load_group(gid)
            if fresh is not None:
                self._put_group(fresh)

    async def _reload_family(self, shop: str, tier: str, topic: str) -> None:
        if self.pg is not None:
            for fresh in await self.pg.load_family(shop, tier, topic):
                self._put_group(fresh)

    async def _reload_links(self, room: str) -> None:
        if self.pg is None:
            return
        links = await self.pg.load_links(room)
        for gid in links:
            if gid not in self.directory.groups:
                await self._reload_group(gid)
        if links:
            self.mirror.links[room] = links
        else:
            self.mirror.links.pop(room, None)

    async def is_member_fresh(self, user_id: str, group_id: str) -> bool:
        """Membership for a channel join: in a cluster, one made on another node counts."""
        if self.directory.is_member(user_id, group_id):
            return True
        with contextlib.suppress(SoukError):
            await self._group(group_id, user=user_id)
        return self.directory.is_member(user_id, group_id)

    async def group_known(self, group_id: str) -> bool:
        """Does the group exist (in a cluster: anywhere)? For channel joins."""
        with contextlib.suppress(SoukError):
            await self._group(group_id)
        return group_id in self.directory.groups

    async def _connector(self, cid: str) -> Connector | None:
        """The inbound listener's lookup: a connector created on another node is loaded."""
        conn = self.connectors.get(cid)
        if conn is None and self.pg is not None and 1 <= len(cid) <= 64:
            raw = await self.pg.load_connector(cid)
            if raw is not None:
                conn = self.connectors.get(cid) or self._add_connector(raw)
        return conn

    async def apply_notice(self, notice: Notice) -> None:
        """Another node committed a change: update this node's copy (never re-publish,
        re-mirror or re-deliver: that node did it, once)."""
        kind = notice.get("k")
        if kind == "q":
            w = notice["q"]
            fresh = Question(
                id=w["id"], room=w["room"], user=w["user"], name=w["name"], text=w["text"],
                asked_at=w["asked_at"], votes=w["votes"],
                voters={notice["voter"]} if notice.get("voter") else set(),
                status=w["status"], answer=w.get("answer"), answered_by=w.get("answered_by"),
                answered_at=w.get("answered_at"), on_stream=bool(w.get("on_stream")),
                overdue_flagged=bool(w.get("overdue_flagged")), rev=int(w.get("rev", 0)),
            )
            copies = [Copy(cid, gid, fresh.room, fresh.id) for cid, gid in notice.get("copies", ())]
            self._adopt(fresh, copies)
        elif kind == "g":
            await self._reload_group(str(notice["id"]))
        elif kind == "links":
            await self._reload_links(str(notice["room"]))
        elif kind == "c":
            if self.pg is not None and notice["id"] not in self.connectors:
                raw = await self.pg.load_connector(str(notice["id"]))
                if raw is not None:
                    self._add_connector(raw)
                    await self._ensure_inbound()
        elif kind == "tags":
            if self.pg is not None:
                tags = await self.pg.load_tags(str(notice["shop"]), str(notice["user"]))
                if tags is not None:
                    self.directory.tags[(str(notice["shop"]), str(notice["user"]))] = tags
        elif kind == "target":
            if self.pg is not None:
                target = await self.pg.load_target(str(notice["room"]))
                if target is not None:
                    self.board(str(notice["room"])).set_target(target)

    # -- overdue timer ----------------------------------------------------------------
    async def check_overdue(self) -> int:
        """Flag questions past their room's target on `staff:<room>`; returns how many."""
        now = self.clock_ms()
        flagged: list[Question] = []
        for board in list(self.boards.values()):
            flagged.extend(board.newly_overdue(now))
        # in a cluster every node's timer sees the question late; the store lets one flag it
        done = await self.store.flag_overdue(flagged)
        for q in done:
            board = self.boards[q.room]
            self.publish(
                f"staff:{q.room}",
                "question_overdue",
                {
                    "room": q.room,
                    "question": q.to_event(),
                    "age_s": (now - q.asked_at) // 1000,
                    "target_s": board.target_s,
                },
            )
        return len(done)

    async def _overdue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.overdue_check_s)
            try:
                await self.check_overdue()
            except Exception:  # the timer must outlive a failed write
                log.exception("overdue check failed")

    # -- connectors -------------------------------------------------------------------
    async def connector_create(
        self, shop: str, fields: dict[str, Any], user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Register an external group (admin). The reply carries the secret, shown once."""
        if user is not None and user.get("role") not in ("admin", "streamer"):
            raise SoukError("forbidden", "only admins and streamers create connectors")
        secret = fields.get("secret") if isinstance(fields, dict) else None
        if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 256):
            raise SoukError("invalid", "secret must be 16..256 characters")
        conn = parse_connector(
            _new_id("c"), shop, fields, secret or secrets.token_urlsafe(32), self.clock_ms()
        )
        await self.store.save_connector(conn.to_dict(with_secret=True))
        self.connectors[conn.id] = conn
        self.delivery.add(conn)
        await self._ensure_inbound()
        self._notify("c", id=conn.id)
        out = conn.to_dict(with_secret=True)
        if self.inbound is not None:
            out["inbound_url"] = f"http://{self.webhook_host}:{self.inbound.port}/hooks/{conn.id}"
        return out

    async def _ensure_inbound(self) -> None:
        if self.inbound is None and self.webhook_port is not None:
            self.inbound = InboundListener(
                self._connector,
                self.answer_from_connector,
                self.clock_ms,
                host=self.webhook_host,
                port=self.webhook_port,
            )
            await self.inbound.start()

    def _to_connectors(self, room: str, item: dict[str, Any], *, skip: str | None = None) -> None:
        for conn in self.delivery.connectors_for(room):
            if conn.id != skip:
                self.delivery.enqueue(conn.id, item)

    @staticmethod
    def _question_item(q: Question) -> dict[str, Any]:
        return {
            "type": "question",
            "question": q.id,
            "room": q.room,
            "name": q.name,
            "text": q.text,
            "votes": q.votes,
            "asked_at": q.asked_at,
        }

    @staticmethod
    def _answer_item(q: Question) -> dict[str, Any]:
        return {
            "type": "answer",
            "question": q.id,
            "room": q.room,
            "name": q.name,
            "text": q.text,
            "answer": q.answer,
            "answered_by": q.answered_by,
            "on_stream": q.on_stream,
        }

    async def _dead_letter(
        self, conn: Connector, item: dict[str, Any], error: str, attempts: int
    ) -> None:
        ts = self.clock_ms()
        dl_id: int | None = None
        try:
            dl_id = await self.store.add_dead_letter(conn.id, conn.room, item, error, attempts, ts)
        except Exception:
            log.exception("could not persist a dead letter for connector %s", conn.id)
        self.publish(
            f"staff:{conn.room}",
            "connector_dead_letter",
            {
                "id": dl_id,
                "connector": conn.id,
                "platform": conn.platform,
                "item": item,
                "error": error,
                "attempts": attempts,
                "ts": ts,
            },
        )

