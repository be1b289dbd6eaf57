"""`Community`: the one object the app holds for Q&A, groups, notices and connectors.

Why this module: it is where the parts meet. It builds the shared state (state.py), composes
the connectors (connectors.py), and inherits the Q&A, group and notice methods (qa.py,
groups.py, notices.py, all over the cluster code in cluster.py); what is left here is what
belongs to the whole: the constructor, the dispatch of a client frame to an op, the life cycle
(load, the overdue timer, the listener, the cluster notices), and moderation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from client_sdk.protocol import Code
from server.bus.base import Publish
from server.cluster.notices import NoSync, Sync
from server.community.connectors import ConnectorHub
from server.community.frames import _field, _opt_field, _shop, _user
from server.community.groups import Groups
from server.community.notices import Notices
from server.community.qa import QuestionsAndAnswers
from server.connectors.delivery import Delivery
from server.connectors.formats import Connector
from server.connectors.inbound import InboundListener
from server.domain.community import STAFF_ROLES, Directory
from server.domain.mirror import Mirror
from server.domain.moderation import Action, FilterConfig, Ladder, LinkFilter
from server.domain.qa import Question, QuestionBoard
from server.errors import SoukError
from server.periodic import every
from server.store.community import CommunityStore

log = logging.getLogger("souk.community")


class Community(QuestionsAndAnswers, Groups, Notices):
    """Q&A boards, groups, mirroring and connectors for one server process.

    `sync`: how this node hears of other nodes' changes and tells its own (a cluster).
    `webhook_port`: None = no inbound listener; 0 = an ephemeral port (tests); otherwise the
    `--webhook-port`. The listener starts only once a connector exists.
    """

    def __init__(
        self,
        store: CommunityStore,
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
        sync: Sync | None = None,
        allow_private_webhooks: bool = False,
    ) -> None:
        self.store = store
        self.sync = sync if sync is not None else NoSync()
        self.publish = publish
        self.clock_ms = clock_ms
        self.answer_target_s = answer_target_s
        self.directory = Directory(welfare_weekly_cap=welfare_weekly_cap)
        self.mirror = Mirror()
        self.boards: dict[str, QuestionBoard] = {}
        self.filter = LinkFilter(filter_config)
        self.ladders: dict[str, Ladder] = {}
        self.hub = ConnectorHub(
            self,
            webhook_host=webhook_host,
            webhook_port=webhook_port,
            max_attempts=connector_max_attempts,
            base_backoff_s=connector_backoff_s,
            max_backoff_s=connector_max_backoff_s,
            allow_private=allow_private_webhooks,
        )
        self.overdue_check_s = overdue_check_s
        self._overdue_task: asyncio.Task[None] | None = None
        self._seen_messages = OrderedDict()

    # the connectors' state, where callers have always found it
    @property
    def connectors(self) -> dict[str, Connector]:
        return self.hub.connectors

    @property
    def delivery(self) -> Delivery:
        return self.hub.delivery

    @property
    def inbound(self) -> InboundListener | None:
        return self.hub.inbound

    @property
    def webhook_host(self) -> str:
        return self.hub.webhook_host

    @property
    def webhook_port(self) -> int | None:
        return self.hub.webhook_port

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
                raise SoukError(Code.FORBIDDEN, "only streamers and admins create groups")
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
                raise SoukError(Code.FORBIDDEN, "only members and staff see a group's members")
            # tags are the merchant's knowledge of a member: staff only
            return {"members": [{k: v for k, v in m.items() if k != "tags"} for m in members]}
        if op == "link_groups":
            if role not in ("streamer", "admin"):
                raise SoukError(Code.FORBIDDEN, "only streamers and admins link groups")
            room = _field(frame, "room")
            return {"groups": await self.link_groups(room, frame.get("groups"), shop=shop)}
        if op == "notice":
            to_group, to_room = _opt_field(frame, "group"), _opt_field(frame, "room")
            return await self.notice(
                user, frame.get("kind"), frame.get("text"), group=to_group, room=to_room
            )
        if op == "connector_create":
            if role != "admin":
                raise SoukError(Code.FORBIDDEN, "only admins create connectors")
            return {"connector": await self.connector_create(_shop(shop), frame, user)}
        raise SoukError(Code.UNKNOWN_OP, f"not a community op: {op}")

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.sync.start()  # subscribed before the load: nothing committed is missed
        raws = await self.store.load(self.directory, self.boards, self.mirror, self.answer_target_s)
        await self.hub.start(raws)
        self.sync.run(self.apply_notice)
        self._overdue_task = asyncio.create_task(
            every(self.overdue_check_s, self.check_overdue, "overdue check", log),
            name="qa-overdue")

    async def stop(self) -> None:
        if self._overdue_task is not None:
            self._overdue_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._overdue_task
            self._overdue_task = None
        try:
            await self.hub.stop()
        finally:  # a connector that fails to stop must not keep the notices running
            await self.sync.stop()

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

    # -- connectors -------------------------------------------------------------------
    async def connector_create(
        self, shop: str, fields: dict[str, Any], user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Register an external group (admin). The reply carries the secret, shown once."""
        return await self.hub.create(shop, fields, user)
