"""Keeping this node's copies in step with the cluster: notices, lazy loads, stale writes.

Why: in a cluster (`--postgres`) the boards, groups, links and connectors in memory are this
node's working copy of a shared record (server/store/community.py). After a commit the node
tells the others (`ClusterSync`, server/cluster/notices.py) and they update their copies
(`apply_notice`); a question, group or connector this node does not know is loaded before it
says not_found; a guarded write that lost a race (`Stale`) makes the node adopt the committed
row (`_adopt`). Alone (the store is not `shared`, the notices go nowhere) memory is the whole
record and none of this happens. Only the node
that served an op publishes its events, mirrors a question and hands it to the connectors, so
each happens once per cluster. See docs/scaleout.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

from client_sdk.protocol import Code
from server.cluster.notices import Notice
from server.community.state import CommunityState
from server.domain.community import Group
from server.domain.mirror import Copy
from server.domain.qa import ANSWERED, OPEN, Question
from server.errors import SoukError


class ClusterCopies(CommunityState):
    """The cluster side of the adapter, shared by the Q&A, group and notice code."""

    # -- telling the other nodes ------------------------------------------------------
    def _notify(self, kind: str, **fields: Any) -> None:
        """Tell the other nodes of the cluster that an entity changed (after the commit)."""
        self.sync.notify(kind, **fields)

    def _notify_question(
        self, q: Question, copies: list[Copy] | None = None, *, voter: str | None = None
    ) -> None:
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

    # -- adopting what the cluster committed ------------------------------------------
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
        got = await self.store.load_question(qid)
        if got is None:
            return None
        return self._adopt(got[0], got[1], force=True, full_voters=True)

    # -- lazy loads: what this node does not know yet -----------------------------------
    async def _question(self, room: str, qid: Any) -> Question:
        """The question `qid` of `room`; in a cluster, one asked on another node is loaded
        from the shared store before this node says not_found."""
        board = self.board(room)
        if (
            self.store.shared
            and isinstance(qid, str)
            and 1 <= len(qid) <= 64
            and qid not in board.questions
        ):
            q = await self._reload_question(qid)
            if q is not None and q.room != room:
                raise SoukError(Code.NOT_FOUND, "no such question in this room")
        return board.get(qid)

    async def _group(self, gid: Any, *, user: str | None = None) -> Group:
        """The group `gid`; in a cluster reloaded first when this node does not know it (or
        does not know `user` in it: they may have joined through another node)."""
        if self.store.shared and isinstance(gid, str) and 1 <= len(gid) <= 64:
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
        fresh = await self.store.load_group(gid)
        if fresh is not None:
            self._put_group(fresh)

    async def _reload_family(self, shop: str, tier: str, topic: str) -> None:
        for fresh in await self.store.load_family(shop, tier, topic):
            self._put_group(fresh)

    async def _reload_links(self, room: str) -> None:
        links = await self.store.load_links(room)
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

    # -- other nodes' notices -----------------------------------------------------------
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
            if notice["id"] not in self.hub.connectors:
                raw = await self.store.load_connector(str(notice["id"]))
                if raw is not None:
                    self.hub.add(raw)
                    await self.hub.ensure_inbound()
        elif kind == "tags":
            tags = await self.store.load_tags(str(notice["shop"]), str(notice["user"]))
            if tags is not None:
                self.directory.tags[(str(notice["shop"]), str(notice["user"]))] = tags
        elif kind == "target":
            target = await self.store.load_target(str(notice["room"]))
            if target is not None:
                self.board(str(notice["room"])).set_target(target)
