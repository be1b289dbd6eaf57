"""Polls: open polls of this process, their votes, live results and timed closes.

Why votes carry a `rev`: in a cluster a user may change their vote through two nodes at once;
every vote takes a number from one sequence when it is written, and a node applies a user's
votes only in rising `rev`, so every node's tally converges on the record's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from client_sdk.protocol import Code
from server.cluster.notices import Notice
from server.domain import fields
from server.domain.polls import Poll, new_poll
from server.domain.throttle import PushThrottle
from server.engagement.plumbing import Plumbing, log, new_id
from server.errors import SoukError
from server.store.db import Row
from server.store.engagement import GuardRefused


class Polls:
    """The open polls of this process."""

    def __init__(self, plumbing: Plumbing) -> None:
        self.p = plumbing
        self.polls: dict[str, Poll] = {}
        self.vote_revs: dict[tuple[str, str], int] = {}  # (poll, user) -> rev applied
        self._throttle: dict[str, PushThrottle] = {}

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["polls"]:
            self.polls[r["id"]] = Poll(r["id"], r["shop"], r["scope"], r["target"], r["question"],
                                       orjson.loads(r["options"]), r["created_by"], r["created_at"],
                                       r["closes_at"])  # fmt: skip
        for r in rows["votes"]:
            self.polls[r["poll"]].votes[r["user_id"]] = r["option"]
            self.vote_revs[(r["poll"], r["user_id"])] = int(r["rev"])
        now = self.p.clock_ms()
        for poll in self.polls.values():  # re-arm the timed closes of open polls
            if poll.closes_at is not None:
                self._arm(poll, now)

    # -- cluster: other nodes' polls -------------------------------------------------------
    async def on_created(self, n: Notice) -> None:
        await self._load(str(n["p"]))

    async def on_vote(self, n: Notice) -> None:
        poll = self.polls.get(str(n["p"]))
        key = (str(n["p"]), str(n["u"]))
        if poll is not None and int(n["r"]) > self.vote_revs.get(key, 0):
            self.vote_revs[key] = int(n["r"])
            poll.votes[key[1]] = int(n["o"])

    async def on_closed(self, n: Notice) -> None:
        poll = self.polls.pop(str(n["p"]), None)
        if poll is not None:
            poll.closed = True
            self._forget_revs(poll)

    # -- polls -----------------------------------------------------------------------------
    async def create(self, shop: str, scope: str, target: str, by: str, raw: Any) -> dict[str, Any]:
        now = self.p.clock_ms()
        poll = new_poll(new_id("poll", now), shop, scope, target, raw, by, now)
        self.polls[poll.id] = poll
        try:
            await self.p.store.add_poll(poll)
        except Exception:
            self.polls.pop(poll.id, None)
            log.exception("poll write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the poll; try again") from None
        self._throttle[poll.id] = PushThrottle()
        self.p.publish(poll.channel, "poll", poll.to_dict(now))
        self.p.notify("poll", p=poll.id)
        if poll.closes_at is not None:
            self._arm(poll, now)
        return poll.to_dict(now)

    def _forget_revs(self, poll: Poll) -> None:
        """A closed poll takes no votes: its vote order is no longer needed."""
        for user in poll.votes:
            self.vote_revs.pop((poll.id, user), None)

    async def find(self, poll_id: Any) -> Poll:
        """`get`, loading from the cluster's record a poll created on another node."""
        pid = fields.ident_value(poll_id, "poll")
        if pid not in self.polls and self.p.store.shared:
            await self._load(pid)
        return self.get(pid)

    async def _load(self, poll_id: str) -> None:
        found = await self.p.store.load_poll(poll_id)
        if found is None:
            return
        poll, votes = found
        now = self.p.clock_ms()
        if not poll.is_open(now):
            self.polls.pop(poll_id, None)
            return
        known = self.polls.get(poll_id)
        if known is None:
            self.polls[poll_id] = known = poll
            self._throttle.setdefault(poll_id, PushThrottle())
            if poll.closes_at is not None:
                self._arm(poll, now)
        for user, (option, rev) in votes.items():
            if rev > self.vote_revs.get((poll_id, user), 0):
                self.vote_revs[(poll_id, user)] = rev
                known.votes[user] = option

    def _arm(self, poll: Poll, now: int) -> None:
        assert poll.closes_at is not None
        pid = poll.id
        asyncio.get_running_loop().call_later(
            max(0.0, (poll.closes_at - now) / 1000), lambda: self.p.spawn(self._expire(pid)))

    def get(self, poll_id: Any) -> Poll:
        pid = fields.ident_value(poll_id, "poll")
        poll = self.polls.get(pid)
        if poll is None:
            raise SoukError(Code.NOT_FOUND, f"no open poll {pid}")
        return poll

    async def vote(self, poll: Poll, user: str, option: Any) -> dict[str, Any]:
        now = self.p.clock_ms()
        before = poll.votes.get(user)
        if poll.vote(user, option, now):
            try:
                rev = await self.p.store.vote(poll.id, user, int(option), now)
            except Exception as exc:
                if poll.votes.get(user) == option:  # nothing newer replaced it meanwhile
                    if before is None:
                        poll.votes.pop(user, None)
                    else:
                        poll.votes[user] = before
                if isinstance(exc, GuardRefused):  # closed on another node
                    self.polls.pop(poll.id, None)
                    poll.closed = True
                    raise SoukError(Code.ENDED, "this poll is closed") from None
                log.exception("vote write failed")
                raise SoukError(Code.UNAVAILABLE, "could not record the vote; try again") from None
            self.vote_revs[(poll.id, user)] = max(rev, self.vote_revs.get((poll.id, user), 0))
            self.p.notify("vote", p=poll.id, u=user, o=int(option), r=rev)
            self._moved(poll)
        return poll.to_dict(now, user=user)

    def _moved(self, poll: Poll) -> None:
        """Live results, coalesced: at most one `poll` event per poll every 100 ms."""
        throttle = self._throttle.setdefault(poll.id, PushThrottle())
        now = self.p.clock_ms()
        due = throttle.note(now)
        if due is None:
            return
        if due <= now:
            throttle.pushed(now)
            self.p.publish(poll.channel, "poll", poll.to_dict(now), droppable=True)
            return

        def flush() -> None:
            throttle.pushed(self.p.clock_ms())
            if poll.id in self.polls:
                self.p.publish(poll.channel, "poll", poll.to_dict(self.p.clock_ms()), droppable=True)

        asyncio.get_running_loop().call_later((due - now) / 1000, flush)

    async def close(self, poll: Poll) -> dict[str, Any]:
        now = self.p.clock_ms()
        if poll.close(now):
            won = await self.p.store.close_poll(poll.id, poll.closes_at)
            self.polls.pop(poll.id, None)
            self._forget_revs(poll)
            if won:  # in a cluster every node's timer fires: the one that closed it tells
                self.p.publish(poll.channel, "poll", poll.to_dict(now))
                self.p.notify("closed", p=poll.id)
        return poll.to_dict(now)

    async def _expire(self, poll_id: str) -> None:
        poll = self.polls.get(poll_id)
        if poll is not None and not poll.is_open(self.p.clock_ms()):
            await self.close(poll)
