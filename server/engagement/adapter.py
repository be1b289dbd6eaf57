"""The asyncio adapter for engagement: coupons, polls, check-ins and points,
invites, show-your-order posts, member layers (docs/engagement.md).

Why this shape: the rules are pure (server.domain.coupons / polls / checkin / invites /
layers); this layer adds the clock, ids, durability and the bus. Each change follows one
pattern: decide and change memory in one synchronous step (so two racing requests can never
both pass a rule), await the durable write, undo memory if the write failed, then publish.
The coupon book is shared with Commerce, which reserves coupons inside `buy`.

The guards two writers can race are the store's SQL (server/store/engagement.py: one vote
per user and poll, one check-in a day, points spent once, an invite reward once per
threshold, one approval per post, a coupon redeemed once with its order), so they hold
however many nodes write. In a cluster (`--postgres`, docs/scaleout.md) the store is `shared`
and each node's memory is a working copy: kept in step by change notices over Redis (the
`sync`, on its own topic) and by lazy loads when a node is asked about something
it does not know (a coupon, a poll, an invite code, a post).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, Protocol

import orjson

from client_sdk.protocol import Code, user_channel
from server.bus.base import Publish
from server.cluster.notices import NoSync, Notice, Sync
from server.domain import checkin as checkin_rules
from server.domain import fields
from server.domain.coupons import Coupon, CouponBook, CouponSpec, coupon_spec, spec_from_row
from server.domain.invites import InviteLedger
from server.domain.layers import Thresholds, layer_value, thresholds_from
from server.domain.polls import Poll, new_poll
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.engagement import EngagementStore, GuardRefused, post_from

log = logging.getLogger("souk.engagement")

INVITE_REWARD: Final = CouponSpec("amount", 500, 0, 0, "Thanks for inviting friends")
SHOWCASE_REWARD: Final = CouponSpec("amount", 300, 0, 0, "Thanks for showing your order")
REWARD_VALID_MS: Final = 30 * 86_400_000
MAX_URL: Final = 2048
MAX_POST_TEXT: Final = 1000


class MemberNumbers(Protocol):
    """A member's numbers, which the layers classify (`server.insights.Insights`)."""

    async def member_stats(self, shop: str, thresholds: Thresholds) -> list[dict[str, Any]]: ...
    async def one_member(self, shop: str, user: str, thresholds: Thresholds) -> dict[str, Any]: ...


def new_id(prefix: str, now_ms: int) -> str:
    return f"{prefix}{now_ms:x}{secrets.token_hex(5)}"


class Engagement:
    """Coupons, polls, check-ins and points, invites, posts and layers of one process."""

    def __init__(self, store: EngagementStore, members: MemberNumbers, publish: Publish,
                 clock_ms: Callable[[], int], *, sync: Sync | None = None) -> None:
        """`members`: the members' numbers the layers classify; `sync`: how this node hears
        of other nodes' changes and tells its own (a cluster)."""
        self.store = store
        self.members_of = members
        self.sync = sync if sync is not None else NoSync()
        self.vote_revs: dict[tuple[str, str], int] = {}  # (poll, user) -> rev applied
        self.publish = publish
        self.clock_ms = clock_ms
        self.coupons = CouponBook()
        self.polls: dict[str, Poll] = {}
        self.streaks: dict[tuple[str, str], checkin_rules.Streak] = {}
        self.points: Counter[tuple[str, str]] = Counter()
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (shop, user)
        self.code_of: dict[tuple[str, str], str] = {}
        self.invites: dict[str, InviteLedger] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.posted_orders: set[str] = set()
        self.thresholds: dict[str, Thresholds] = {}
        self.sale_targets: dict[str, tuple[str, str]] = {}  # sale -> (shop, layer)
        self._poll_throttle: dict[str, PushThrottle] = {}

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load state."""
        await self.sync.start()  # subscribed before loading: nothing committed is missed
        rows = await self.store.load()
        for r in rows["coupons"]:
            self.coupons.add(_coupon_from(r))
        for r in rows["redemptions"]:
            self.coupons.restore_redemption(r["coupon"], r["order_id"])
        for r in rows["polls"]:
            self.polls[r["id"]] = Poll(r["id"], r["shop"], r["scope"], r["target"], r["question"],
                                       orjson.loads(r["options"]), r["created_by"], r["created_at"],
                                       r["closes_at"])  # fmt: skip
        for r in rows["votes"]:
            self.polls[r["poll"]].votes[r["user_id"]] = r["option"]
            self.vote_revs[(r["poll"], r["user_id"])] = int(r["rev"])
        for r in rows["streaks"]:
            self.streaks[(r["group_id"], r["user_id"])] = checkin_rules.Streak(r["day"], r["streak"], r["total"])
        for r in rows["points"]:
            self.points[(r["shop"], r["user_id"])] = int(r["balance"])
        for r in rows["codes"]:
            self.codes[r["code"]] = (r["shop"], r["user_id"])
            self.code_of[(r["shop"], r["user_id"])] = r["code"]
        for r in rows["known"]:
            self._ledger(r["shop"]).known.add(r["user_id"])
        for r in rows["invites"]:
            led = self._ledger(r["shop"])
            led.known.discard(r["invitee"])
            led.attribute(r["inviter"], r["invitee"])
        for r in rows["posts"]:
            self.posts[r["id"]] = post_from(r)
            self.posted_orders.add(r["order_id"])
        for r in rows["thresholds"]:
            self.thresholds[r["shop"]] = thresholds_from(orjson.loads(r["data"]))
        for r in rows["targets"]:
            self.sale_targets[r["sale"]] = (r["shop"], r["layer"])
        now = self.clock_ms()
        for poll in self.polls.values():  # re-arm the timed closes of open polls
            if poll.closes_at is not None:
                self._arm_poll(poll, now)
        self.sync.run(self.apply_notice)

    async def stop(self) -> None:
        await self.sync.stop()

    # -- cluster: change notices -----------------------------------------------------------
    def _notify(self, kind: str, **fields: Any) -> None:
        self.sync.notify(kind, **fields)

    async def apply_notice(self, n: Notice) -> None:
        """Another node committed a change: bring this node's copy in step. Never publishes
        (the node that made the change told the clients once)."""
        k = n.get("k")
        if k == "coupons":
            for row in n["c"]:
                if row["id"] not in self.coupons.coupons:
                    self.coupons.add(_coupon_from(row))
        elif k == "spent":
            self.coupons.restore_redemption(str(n["c"]), str(n["o"]))
        elif k == "poll":
            await self._load_poll(str(n["p"]))
        elif k == "vote":
            poll = self.polls.get(str(n["p"]))
            key = (str(n["p"]), str(n["u"]))
            if poll is not None and int(n["r"]) > self.vote_revs.get(key, 0):
                self.vote_revs[key] = int(n["r"])
                poll.votes[key[1]] = int(n["o"])
        elif k == "closed":
            poll = self.polls.pop(str(n["p"]), None)
            if poll is not None:
                poll.closed = True
                self._forget_revs(poll)
        elif k == "post":
            await self._load_post(str(n["p"]))
        elif k == "thresholds":
            self.thresholds[str(n["s"])] = thresholds_from(n["d"])
        elif k == "target":
            self.sale_targets[str(n["sale"])] = (str(n["s"]), str(n["l"]))
        elif k == "code":
            self.codes[str(n["c"])] = (str(n["s"]), str(n["u"]))
            self.code_of[(str(n["s"]), str(n["u"]))] = str(n["c"])

    # -- coupons ---------------------------------------------------------------------------
    def _make_coupon(self, shop: str, user: str, spec: CouponSpec, now: int, source: str) -> Coupon:
        c = Coupon(new_id("c", now), shop, user, spec, now, source)
        self.coupons.add(c)
        return c

    async def _issue(self, coupons: list[Coupon], write: Any) -> Any:
        """Await a write that makes `coupons` durable; drop them from memory if it fails
        (`conflict` when a guard of the cluster store refused it). Returns the write's result."""
        try:
            result = await write
        except GuardRefused as exc:
            for c in coupons:
                self.coupons.discard(c.id)
            extra = {} if exc.balance is None else {"balance": exc.balance}
            raise SoukError(Code.CONFLICT, str(exc), **extra) from None
        except Exception:
            for c in coupons:
                self.coupons.discard(c.id)
            log.exception("coupon write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the coupon; try again") from None
        now = self.clock_ms()
        for c in coupons:
            self.publish(user_channel(c.user), "coupon", c.to_dict(now))
        self._notify_coupons(coupons)
        return result

    def _notify_coupons(self, coupons: list[Coupon]) -> None:
        for at in range(0, len(coupons), 500):  # bounded notices for a big issue
            self._notify("coupons", c=[_coupon_row(c) for c in coupons[at:at + 500]])

    async def find_coupon(self, coupon_id: str, user: str) -> None:
        """Before `buy` in a cluster: a coupon this node does not know (issued on another
        node, its notice not arrived) is read from the record with the user's others."""
        if self.store.shared and coupon_id not in self.coupons.coupons:
            await self._load_coupons_of(user)

    async def _load_coupons_of(self, user: str) -> None:
        rows, spent = await self.store.coupons_of(user)
        for r in rows:
            if r["id"] not in self.coupons.coupons:
                self.coupons.add(_coupon_from(r))
        for r in spent:
            self.coupons.restore_redemption(r["coupon"], r["order_id"])

    def coupon_spent(self, coupon_id: str, order_id: str) -> None:
        """This node's `buy` committed a coupon's redemption: the other nodes' books learn."""
        self._notify("spent", c=coupon_id, o=order_id)

    async def coupon_issue(self, shop: str, raw: Any, users: list[str], target: tuple[str, str]) -> dict[str, Any]:
        """Issue one coupon per user of `users` (the op resolved user/layer/group to users)."""
        now = self.clock_ms()
        spec = coupon_spec(raw, now)
        if not users:
            return {"issued": 0, "coupons": []}
        made = [self._make_coupon(shop, u, spec, now, target[0]) for u in users]
        action = (shop, target[0], target[1], "coupon", f"{spec.kind}:{spec.value}", now)
        await self._issue(made, self.store.add_coupons(made, action))
        return {"issued": len(made), "coupons": [c.to_dict(now) for c in made[:100]]}

    async def coupons_mine(self, user: str) -> list[dict[str, Any]]:
        if self.store.shared:  # the cluster's record: issued or spent on any node
            await self._load_coupons_of(user)
        now = self.clock_ms()
        return [c.to_dict(now) for c in self.coupons.mine(user)]

    # -- polls -----------------------------------------------------------------------------
    async def poll_create(self, shop: str, scope: str, target: str, by: str, raw: Any) -> dict[str, Any]:
        now = self.clock_ms()
        poll = new_poll(new_id("poll", now), shop, scope, target, raw, by, now)
        self.polls[poll.id] = poll
        try:
            await self.store.add_poll(poll)
        except Exception:
            self.polls.pop(poll.id, None)
            log.exception("poll write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the poll; try again") from None
        self._poll_throttle[poll.id] = PushThrottle()
        self.publish(poll.channel, "poll", poll.to_dict(now))
        self._notify("poll", p=poll.id)
        if poll.closes_at is not None:
            self._arm_poll(poll, now)
        return poll.to_dict(now)

    def _forget_revs(self, poll: Poll) -> None:
        """A closed poll takes no votes: its vote order is no longer needed."""
        for user in poll.votes:
            self.vote_revs.pop((poll.id, user), None)

    async def find_poll(self, poll_id: Any) -> Poll:
        """`poll`, loading from the cluster's record a poll created on another node."""
        pid = fields.ident_value(poll_id, "poll")
        if pid not in self.polls and self.store.shared:
            await self._load_poll(pid)
        return self.poll(pid)

    async def _load_poll(self, poll_id: str) -> None:
        found = await self.store.load_poll(poll_id)
        if found is None:
            return
        poll, votes = found
        now = self.clock_ms()
        if not poll.is_open(now):
            self.polls.pop(poll_id, None)
            return
        known = self.polls.get(poll_id)
        if known is None:
            self.polls[poll_id] = known = poll
            self._poll_throttle.setdefault(poll_id, PushThrottle())
            if poll.closes_at is not None:
                self._arm_poll(poll, now)
        for user, (option, rev) in votes.items():
            if rev > self.vote_revs.get((poll_id, user), 0):
                self.vote_revs[(poll_id, user)] = rev
                known.votes[user] = option

    def _arm_poll(self, poll: Poll, now: int) -> None:
        assert poll.closes_at is not None
        pid = poll.id
        asyncio.get_running_loop().call_later(
            max(0.0, (poll.closes_at - now) / 1000), lambda: self._spawn(self._expire_poll(pid)))

    def poll(self, poll_id: Any) -> Poll:
        pid = fields.ident_value(poll_id, "poll")
        poll = self.polls.get(pid)
        if poll is None:
            raise SoukError(Code.NOT_FOUND, f"no open poll {pid}")
        return poll

    async def poll_vote(self, poll: Poll, user: str, option: Any) -> dict[str, Any]:
        now = self.clock_ms()
        before = poll.votes.get(user)
        if poll.vote(user, option, now):
            try:
                rev = await self.store.vote(poll.id, user, int(option), now)
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
            self._notify("vote", p=poll.id, u=user, o=int(option), r=rev)
            self._poll_moved(poll)
        return poll.to_dict(now, user=user)

    def _poll_moved(self, poll: Poll) -> None:
        """Live results, coalesced: at most one `poll` event per poll every 100 ms."""
        throttle = self._poll_throttle.setdefault(poll.id, PushThrottle())
        now = self.clock_ms()
        due = throttle.note(now)
        if due is None:
            return
        if due <= now:
            throttle.pushed(now)
            self.publish(poll.channel, "poll", poll.to_dict(now), droppable=True)
            return

        def flush() -> None:
            throttle.pushed(self.clock_ms())
            if poll.id in self.polls:
                self.publish(poll.channel, "poll", poll.to_dict(self.clock_ms()), droppable=True)

        asyncio.get_running_loop().call_later((due - now) / 1000, flush)

    async def poll_close(self, poll: Poll) -> dict[str, Any]:
        now = self.clock_ms()
        if poll.close(now):
            won = await self.store.close_poll(poll.id, poll.closes_at)
            self.polls.pop(poll.id, None)
            self._forget_revs(poll)
            if won:  # in a cluster every node's timer fires: the one that closed it tells
                self.publish(poll.channel, "poll", poll.to_dict(now))
                self._notify("closed", p=poll.id)
        return poll.to_dict(now)

    async def _expire_poll(self, poll_id: str) -> None:
        poll = self.polls.get(poll_id)
        if poll is not None and not poll.is_open(self.clock_ms()):
            await self.poll_close(poll)

    # -- check-in and points ---------------------------------------------------------------
    async def checkin(self, shop: str, group: str, user: str) -> dict[str, Any]:
        now = self.clock_ms()
        key = (group, user)
        if self.store.shared:  # the last check-in may have been taken on another node
            last = await self.store.streak(group, user)
            if last is not None:
                self.streaks[key] = last
        prev = self.streaks.get(key)
        nxt, points = checkin_rules.check_in(prev, now)
        self.streaks[key] = nxt
        self.points[(shop, user)] += points
        try:
            balance = await self.store.checkin(shop, group, user, nxt.last_day, nxt.streak, points, now)
        except Exception as exc:
            self.points[(shop, user)] -= points
            if self.streaks.get(key) is nxt:
                if prev is None:
                    self.streaks.pop(key, None)
                else:
                    self.streaks[key] = prev
            if isinstance(exc, GuardRefused):  # another node took today's check-in first
                raise SoukError(Code.CONFLICT, "already checked in today") from None
            log.exception("check-in write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the check-in; try again") from None
        self.points[(shop, user)] = balance
        return {"group": group, "streak": nxt.streak, "points": points, "total": nxt.total,
                "balance": self.points[(shop, user)]}

    def balance(self, shop: str, user: str) -> int:
        return self.points.get((shop, user), 0)

    async def points_balance(self, shop: str, user: str) -> int:
        """The balance; in a cluster the shared one (points earned on any node)."""
        if self.store.shared:
            self.points[(shop, user)] = await self.store.balance(shop, user)
        return self.balance(shop, user)

    async def points_redeem(self, shop: str, user: str, raw_points: Any) -> dict[str, Any]:
        await self.points_balance(shop, user)
        now = self.clock_ms()
        value = checkin_rules.redeem_value(raw_points, self.balance(shop, user))
        points = int(raw_points)
        self.points[(shop, user)] -= points
        spec = CouponSpec("amount", value, 0, now + REWARD_VALID_MS, f"{points} points")
        c = self._make_coupon(shop, user, spec, now, "points")
        try:
            # the store spends the points with a conditional UPDATE: `conflict` when they were
            # spent meanwhile (on another node)
            left = await self._issue([c], self.store.redeem(shop, user, points, c))
        except SoukError:
            self.points[(shop, user)] += points
            raise
        self.points[(shop, user)] = left
        return {"coupon": c.to_dict(now), "balance": self.balance(shop, user)}

    # -- invites ---------------------------------------------------------------------------
    def _ledger(self, shop: str) -> InviteLedger:
        return self.invites.setdefault(shop, InviteLedger())

    async def invite_code(self, shop: str, user: str) -> str:
        code = self.code_of.get((shop, user))
        if code is None:
            code = await self.store.add_code(f"i{secrets.token_urlsafe(6)}".replace("-", "x").replace("_", "y"),
                                             shop, user)
            self.codes[code] = (shop, user)
            self.code_of[(shop, user)] = code
            self._notify("code", c=code, s=shop, u=user)
        return code

    async def find_code(self, code: Any) -> tuple[str, str]:
        """`inviter_of_code`, loading a code made on another node."""
        c = fields.ident_value(code, "invite")
        if c not in self.codes and self.store.shared:
            found = await self.store.load_code(c)
            if found is not None:
                self.codes[c] = found
                self.code_of[found] = c
        return self.inviter_of_code(c)

    async def known_before(self, shop: str, user: str) -> bool:
        """`was_known`, from the record: a member (or invitee) of the shop, on any node."""
        return await self.store.known_before(shop, user)

    def inviter_of_code(self, code: Any) -> tuple[str, str]:
        c = fields.ident_value(code, "invite")
        found = self.codes.get(c)
        if found is None:
            raise SoukError(Code.NOT_FOUND, "unknown invite code")
        return found

    def mark_known(self, shop: str, user: str) -> None:
        """A join without a code: this user can never be counted as someone's invitee later."""
        self._ledger(shop).known.add(user)

    def was_known(self, shop: str, user: str) -> bool:
        return user in self._ledger(shop).known

    async def joined(self, shop: str, invitee: str, group: str, inviter: str | None,
                     known_before: bool) -> dict[str, Any] | None:
        """After a successful group join: attribute it (once) and grant due rewards."""
        led = self._ledger(shop)
        if inviter is None:
            led.known.add(invitee)
            return None
        if known_before:
            led.known.add(invitee)
            return {"counted": False}
        if inviter == invitee:
            return {"counted": False}
        # decided in SQL: several nodes may attribute joins to one inviter at once, and the
        # invitee must count once per shop and each reward be granted once
        now = self.clock_ms()
        spec = CouponSpec(INVITE_REWARD.kind, INVITE_REWARD.value, 0, now + REWARD_VALID_MS, INVITE_REWARD.title)

        def make(first: int, due: int) -> list[tuple[int, Coupon]]:
            return [(first + k, Coupon(new_id("c", now), shop, inviter, spec, now, "invite")) for k in range(due)]

        try:
            counted, rewards = await self.store.add_invite(
                shop, invitee, inviter, group, now, led.threshold, make)
        except Exception:
            log.exception("invite write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the invite; try again") from None
        led.known.add(invitee)
        if not counted:
            return {"counted": False}
        led.inviter_of[invitee] = inviter
        led.invitees.setdefault(inviter, []).append(invitee)
        for _, c in rewards:
            self.coupons.add(c)
            self.publish(user_channel(c.user), "coupon", c.to_dict(now))
        self._notify_coupons([c for _, c in rewards])
        return {"counted": True, "inviter": inviter, "rewards": len(rewards)}

    async def invite_stats(self, shop: str, user: str) -> dict[str, Any]:
        invited, rewarded = await self.store.invite_stats(shop, user)
        return {"invited": invited, "rewards": rewarded, "threshold": self._ledger(shop).threshold}

    # -- show-your-order -------------------------------------------------------------------
    async def showcase_post(self, shop: str, group: str, user: str, order: dict[str, Any] | None,
                            raw: Any) -> dict[str, Any]:
        f = fields.mapping(raw)
        order_id = fields.ident(f, "order")
        if order is None or order.get("user") != user:
            raise SoukError(Code.NOT_FOUND, f"no order {order_id} of yours")
        if order.get("status") != "confirmed":
            raise SoukError(Code.CONFLICT, "only a confirmed (delivered) order can be shown")
        image_url = fields.url(f, "image_url")
        if not image_url:
            raise fields.invalid("image_url", "a photo link is required")
        text = fields.text(f, "text", 1, MAX_POST_TEXT)
        if order_id in self.posted_orders:
            raise SoukError(Code.CONFLICT, "this order was already shown")
        now = self.clock_ms()
        post: dict[str, Any] = {"id": new_id("sp", now), "shop": shop, "group": group, "order": order_id, "user": user,
                "image_url": image_url, "text": text, "ts": now, "status": "pending", "coupon": None}
        self.posted_orders.add(order_id)
        try:
            await self.store.add_post(post)
        except Exception:
            self.posted_orders.discard(order_id)
            log.exception("post write failed")
            raise SoukError(Code.CONFLICT, "this order was already shown") from None
        self.posts[post["id"]] = post
        self.publish(f"group:{group}", "showcase", _public_post(post))
        self._notify("post", p=post["id"])
        return _public_post(post)

    async def _load_post(self, post_id: str) -> None:
        post = await self.store.load_post(post_id)
        if post is not None:
            self.posts[post_id] = post
            self.posted_orders.add(post["order"])

    async def showcase_approve(self, shop: str | None, post_id: Any) -> dict[str, Any]:
        pid = fields.ident_value(post_id, "post")
        if self.store.shared:  # posted on another node, or approved there: the record's state
            await self._load_post(pid)
        post = self.posts.get(pid)
        if post is None or (shop is not None and post["shop"] != shop):
            raise SoukError(Code.NOT_FOUND, f"no post {pid}")
        if post["status"] != "pending":
            raise SoukError(Code.CONFLICT, "this post was already approved")
        now = self.clock_ms()
        post["status"] = "approved"  # one reward per order: decided here, in one step
        spec = CouponSpec(SHOWCASE_REWARD.kind, SHOWCASE_REWARD.value, 0, now + REWARD_VALID_MS, SHOWCASE_REWARD.title)
        c = self._make_coupon(post["shop"], post["user"], spec, now, "showcase")
        try:
            await self._issue([c], self.store.approve_post(pid, c))
        except SoukError:
            post["status"] = "pending"
            raise
        post["coupon"] = c.id
        self.publish(f"group:{post['group']}", "showcase", _public_post(post))
        self._notify("post", p=pid)
        return {"post": _public_post(post), "coupon": c.to_dict(now)}

    # -- layers ----------------------------------------------------------------------------
    def thresholds_of(self, shop: str) -> Thresholds:
        return self.thresholds.get(shop, Thresholds())

    async def set_thresholds(self, shop: str, raw: Any) -> dict[str, int]:
        t = self.thresholds_of(shop).updated(raw)
        await self.store.save_thresholds(shop, t.to_dict())
        self.thresholds[shop] = t
        self._notify("thresholds", s=shop, d=t.to_dict())
        return t.to_dict()

    async def members(self, shop: str, layer: Any = None, tag: Any = None) -> list[dict[str, Any]]:
        """Every member of the shop with layer and stats; filtered by layer and/or tag."""
        want = None if layer is None else layer_value(layer)
        rows = await self.members_of.member_stats(shop, self.thresholds_of(shop))
        if want is not None:
            rows = [r for r in rows if r["layer"] == want]
        if tag is not None:
            t = fields.text({"tag": tag}, "tag", 1, 100)
            rows = [r for r in rows if t in r["tags"]]
        return rows

    async def target_sale(self, shop: str, sale: str, layer: Any) -> dict[str, Any]:
        """Restrict a flash sale to the members of one layer (e.g. a presale for high-value)."""
        lay = layer_value(layer)
        await self.store.target_sale(sale, shop, lay, self.clock_ms())
        self.sale_targets[sale] = (shop, lay)
        self._notify("target", sale=sale, s=shop, l=lay)
        return {"sale": sale, "layer": lay}

    async def check_sale_target(self, sale: Any, user: str) -> None:
        """Before `buy`: a targeted sale admits only its layer (checked from the records now)."""
        target = self.sale_targets.get(sale) if isinstance(sale, str) else None
        if target is None:
            return
        shop, layer = target
        row = await self.members_of.one_member(shop, user, self.thresholds_of(shop))
        if row["layer"] != layer:
            raise SoukError(Code.FORBIDDEN, f"this sale is for {layer} members", layer=layer)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_report)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engagement task failed", exc_info=task.exception())


def _coupon_row(c: Coupon) -> dict[str, Any]:
    s = c.spec
    return {"id": c.id, "shop": c.shop, "user_id": c.user, "kind": s.kind, "value": s.value,
            "min_spend": s.min_spend, "expires_at": s.expires_at, "title": s.title,
            "issued_at": c.issued_at, "source": c.source}


def _coupon_from(r: Any) -> Coupon:
    """A coupon from a stored row or a notice (the same names)."""
    return Coupon(r["id"], r["shop"], r["user_id"], spec_from_row(r), r["issued_at"], r["source"])


def _public_post(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("id", "group", "order", "user", "image_url", "text", "ts", "status", "coupon")}
