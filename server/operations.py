"""The asyncio adapter for community operations: coupons, polls, check-ins and points,
invites, show-your-order posts, member layers, and the activity log behind the merchant's
numbers (issue 10; docs/operations.md).

Why this shape: the rules are pure (server.domain.coupons / polls / checkin / invites /
layers); this layer adds the clock, ids, durability and the bus. Each change follows one
pattern: decide and change memory in one synchronous step (so two racing requests can never
both pass a rule), await the durable write, undo memory if the write failed, then publish.
The coupon book is shared with Commerce, which reserves coupons inside `buy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import orjson

from client_sdk.protocol import Code, user_channel
from server.bus.base import Publish
from server.domain import checkin as checkin_rules
from server.domain import fields
from server.domain.coupons import Coupon, CouponBook, CouponSpec, coupon_spec, spec_from_row
from server.domain.invites import InviteLedger
from server.domain.layers import Thresholds, layer_value, thresholds_from
from server.domain.polls import Poll, new_poll
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.metrics_store import MetricsStore
from server.store.operations_store import OperationsStore
from server.store.sqlite import SqliteDatabase

log = logging.getLogger("souk.operations")

STAFF_ROLES: Final = frozenset({"moderator", "streamer", "admin"})
INVITE_REWARD: Final = CouponSpec("amount", 500, 0, 0, "Thanks for inviting friends")
SHOWCASE_REWARD: Final = CouponSpec("amount", 300, 0, 0, "Thanks for showing your order")
REWARD_VALID_MS: Final = 30 * 86_400_000
MAX_URL: Final = 2048
MAX_POST_TEXT: Final = 1000


def new_id(prefix: str, now_ms: int) -> str:
    return f"{prefix}{now_ms:x}{secrets.token_hex(5)}"


class Operations:
    """Everything of issue 10 that keeps state; one per process."""

    def __init__(self, db: SqliteDatabase, publish: Publish, clock_ms: Callable[[], int], *,
                 presence_interval_s: float = 5.0, flush_interval_s: float = 1.0) -> None:
        self.db = db
        self.store = OperationsStore(db)
        self.metrics = MetricsStore(db)
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
        self.excluded: dict[str, set[str]] = {}
        self.sale_targets: dict[str, tuple[str, str]] = {}  # sale -> (shop, layer)
        self.presence_interval_s = presence_interval_s
        self.flush_interval_s = flush_interval_s
        self.present: dict[str, Counter[str]] = {}  # room -> user -> connections (viewers only)
        self._activity: list[tuple[str, str, str, int, int]] = []
        self._presence: list[tuple[str, int, int, int]] = []
        self._actions: list[tuple[str, str, str, str, str, int]] = []
        self._poll_throttle: dict[str, PushThrottle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load state (after commerce and community started: it reads their tables)."""
        await self.store.late_indexes()
        rows = self.store.load()
        for r in rows["coupons"]:
            spec = spec_from_row(dict(r))
            self.coupons.add(Coupon(r["id"], r["shop"], r["user"], spec, r["issued_at"], r["source"]))
        for r in rows["redemptions"]:
            self.coupons.restore_redemption(r["coupon"], r["order_id"])
        for r in rows["polls"]:
            self.polls[r["id"]] = Poll(r["id"], r["shop"], r["scope"], r["target"], r["question"],
                                       orjson.loads(r["options"]), r["created_by"], r["created_at"],
                                       r["closes_at"])  # fmt: skip
        for r in rows["votes"]:
            self.polls[r["poll"]].votes[r["user"]] = r["option"]
        for r in rows["streaks"]:
            self.streaks[(r["group_id"], r["user"])] = checkin_rules.Streak(r["day"], r["streak"], r["total"])
        for r in rows["points"]:
            self.points[(r["shop"], r["user"])] = int(r["balance"])
        for r in rows["codes"]:
            self.codes[r["code"]] = (r["shop"], r["user"])
            self.code_of[(r["shop"], r["user"])] = r["code"]
        for r in rows["known"]:
            self._ledger(r["shop"]).known.add(r["user_id"])
        for r in rows["invites"]:
            led = self._ledger(r["shop"])
            led.known.discard(r["invitee"])
            led.attribute(r["inviter"], r["invitee"])
        for r in rows["rewards"]:
            self._ledger(r["shop"]).rewarded[r["inviter"]] = int(r["n"])
        for r in rows["posts"]:
            self.posts[r["id"]] = {"id": r["id"], "shop": r["shop"], "group": r["group_id"],
                                   "order": r["order_id"], "user": r["user"], "image_url": r["image_url"],
                                   "text": r["text"], "ts": r["ts"], "status": r["status"], "coupon": r["coupon"]}
            self.posted_orders.add(r["order_id"])
        for r in rows["thresholds"]:
            self.thresholds[r["shop"]] = thresholds_from(orjson.loads(r["data"]))
        for r in rows["targets"]:
            self.sale_targets[r["sale"]] = (r["shop"], r["layer"])
        for r in rows["excluded"]:
            self.excluded.setdefault(r["shop"], set()).add(r["user"])
        now = self.clock_ms()
        for poll in self.polls.values():  # re-arm the timed closes of open polls
            if poll.closes_at is not None:
                self._arm_poll(poll, now)
        self._tasks = [asyncio.create_task(self._flush_loop()), asyncio.create_task(self._presence_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.flush()

    # -- coupons ---------------------------------------------------------------------------
    def _make_coupon(self, shop: str, user: str, spec: CouponSpec, now: int, source: str) -> Coupon:
        c = Coupon(new_id("c", now), shop, user, spec, now, source)
        self.coupons.add(c)
        return c

    async def _issue(self, coupons: list[Coupon], write: Any) -> None:
        """Await a write that makes `coupons` durable; drop them from memory if it fails."""
        try:
            await write
        except Exception:
            for c in coupons:
                self.coupons.discard(c.id)
            log.exception("coupon write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the coupon; try again") from None
        now = self.clock_ms()
        for c in coupons:
            self.publish(user_channel(c.user), "coupon", c.to_dict(now))

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

    def coupons_mine(self, user: str) -> list[dict[str, Any]]:
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
        if poll.closes_at is not None:
            self._arm_poll(poll, now)
        return poll.to_dict(now)

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
                await self.store.vote(poll.id, user, int(option), now)
            except Exception:
                if poll.votes.get(user) == option:  # nothing newer replaced it meanwhile
                    if before is None:
                        poll.votes.pop(user, None)
                    else:
                        poll.votes[user] = before
                log.exception("vote write failed")
                raise SoukError(Code.UNAVAILABLE, "could not record the vote; try again") from None
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
            await self.store.close_poll(poll.id, poll.closes_at)
            self.polls.pop(poll.id, None)
            self.publish(poll.channel, "poll", poll.to_dict(now))
        return poll.to_dict(now)

    async def _expire_poll(self, poll_id: str) -> None:
        poll = self.polls.get(poll_id)
        if poll is not None and not poll.is_open(self.clock_ms()):
            await self.poll_close(poll)

    # -- check-in and points ---------------------------------------------------------------
    async def checkin(self, shop: str, group: str, user: str) -> dict[str, Any]:
        now = self.clock_ms()
        key = (group, user)
        prev = self.streaks.get(key)
        nxt, points = checkin_rules.check_in(prev, now)
        self.streaks[key] = nxt
        self.points[(shop, user)] += points
        try:
            await self.store.checkin(shop, group, user, nxt.last_day, nxt.streak, points, now)
        except Exception:
            self.points[(shop, user)] -= points
            if self.streaks.get(key) is nxt:
                if prev is None:
                    self.streaks.pop(key, None)
                else:
                    self.streaks[key] = prev
            log.exception("check-in write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the check-in; try again") from None
        return {"group": group, "streak": nxt.streak, "points": points, "total": nxt.total,
                "balance": self.points[(shop, user)]}

    def balance(self, shop: str, user: str) -> int:
        return self.points.get((shop, user), 0)

    async def points_redeem(self, shop: str, user: str, raw_points: Any) -> dict[str, Any]:
        now = self.clock_ms()
        value = checkin_rules.redeem_value(raw_points, self.balance(shop, user))
        points = int(raw_points)
        self.points[(shop, user)] -= points
        spec = CouponSpec("amount", value, 0, now + REWARD_VALID_MS, f"{points} points")
        c = self._make_coupon(shop, user, spec, now, "points")
        try:
            await self._issue([c], self.store.redeem(shop, user, points, c))
        except SoukError:
            self.points[(shop, user)] += points
            raise
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
        return code

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
        if not led.attribute(inviter, invitee):
            return {"counted": False}
        now = self.clock_ms()
        due = led.rewards_due(inviter)
        first = led.rewarded[inviter] - due + 1 if due else 0
        spec = CouponSpec(INVITE_REWARD.kind, INVITE_REWARD.value, 0, now + REWARD_VALID_MS, INVITE_REWARD.title)
        rewards = [(first + k, self._make_coupon(shop, inviter, spec, now, "invite")) for k in range(due)]
        try:
            await self._issue([c for _, c in rewards],
                              self.store.add_invite(shop, invitee, inviter, group, now, rewards))
        except SoukError:
            led.unreward(inviter, due)
            led.invitees[inviter].remove(invitee)
            led.inviter_of.pop(invitee, None)
            raise
        return {"counted": True, "inviter": inviter, "rewards": len(rewards)}

    def invite_stats(self, shop: str, user: str) -> dict[str, Any]:
        led = self._ledger(shop)
        return {"invited": len(led.invitees.get(user, [])), "rewards": led.rewarded.get(user, 0),
                "threshold": led.threshold}

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
        return _public_post(post)

    async def showcase_approve(self, shop: str | None, post_id: Any) -> dict[str, Any]:
        pid = fields.ident_value(post_id, "post")
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
        return {"post": _public_post(post), "coupon": c.to_dict(now)}

    # -- layers ----------------------------------------------------------------------------
    def thresholds_of(self, shop: str) -> Thresholds:
        return self.thresholds.get(shop, Thresholds())

    async def set_thresholds(self, shop: str, raw: Any) -> dict[str, int]:
        t = self.thresholds_of(shop).updated(raw)
        await self.store.save_thresholds(shop, t.to_dict())
        self.thresholds[shop] = t
        return t.to_dict()

    async def members(self, shop: str, layer: Any = None, tag: Any = None) -> list[dict[str, Any]]:
        """Every member of the shop with layer and stats; filtered by layer and/or tag."""
        want = None if layer is None else layer_value(layer)
        rows = await self.metrics.member_stats(shop, self.clock_ms(), self.thresholds_of(shop),
                                               self.excluded.get(shop, set()))
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
        return {"sale": sale, "layer": lay}

    async def check_sale_target(self, sale: Any, user: str) -> None:
        """Before `buy`: a targeted sale admits only its layer (checked from the records now)."""
        target = self.sale_targets.get(sale) if isinstance(sale, str) else None
        if target is None:
            return
        shop, layer = target
        row = await self.metrics.one_member(shop, user, self.clock_ms(), self.thresholds_of(shop))
        if row["layer"] != layer:
            raise SoukError(Code.FORBIDDEN, f"this sale is for {layer} members", layer=layer)

    # -- metrics: the activity log ---------------------------------------------------------
    def viewer_joined(self, room: str, user: str, role: str) -> None:
        if role in STAFF_ROLES:
            return
        self.present.setdefault(room, Counter())[user] += 1
        self._activity.append((room, user, "view", 1, self.clock_ms()))

    def viewer_left(self, room: str, user: str) -> None:
        present = self.present.get(room)
        if present is None or user not in present:
            return
        present[user] -= 1
        if present[user] <= 0:
            del present[user]

    def activity(self, room: str, user: str, role: str, kind: str, n: int = 1) -> None:
        """A viewer's chat message or likes in a room (staff never counted)."""
        if role not in STAFF_ROLES:
            self._activity.append((room, user, kind, n, self.clock_ms()))

    def action(self, shop: str, scope: str, target: str, kind: str, detail: str) -> None:
        """A merchant action (a sale, a talk, a notice) for the 'what preceded changes' view."""
        self._actions.append((shop, scope, target, kind, detail[:100], self.clock_ms()))

    def sample_presence(self) -> None:
        now = self.clock_ms()
        ms = int(self.presence_interval_s * 1000)
        excluded = set().union(*self.excluded.values()) if self.excluded else set()
        for room, users in self.present.items():
            n = sum(1 for u in users if u not in excluded)
            if n:
                self._presence.append((room, now, n, ms))

    async def flush(self) -> None:
        act, pres, acts = self._activity, self._presence, self._actions
        if not (act or pres or acts):
            return
        self._activity, self._presence, self._actions = [], [], []
        try:
            await self.store.record(act, pres, acts)
        except Exception:
            log.exception("activity write failed (%d rows lost)", len(act) + len(pres) + len(acts))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.presence_interval_s)
            self.sample_presence()

    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> list[str]:
        await self.store.set_excluded(shop, add, remove)
        ex = self.excluded.setdefault(shop, set())
        ex.update(add)
        ex.difference_update(remove)
        return sorted(ex)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_report)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("operations task failed", exc_info=task.exception())


def _public_post(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("id", "group", "order", "user", "image_url", "text", "ts", "status", "coupon")}
