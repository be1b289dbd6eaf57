"""Invites (裂变): each member's code per shop, joins attributed to it, rewards per threshold.

Why the record decides: several nodes may attribute joins to one inviter at once, an invitee
must count once per shop, and each reward be granted once; so the invite and its rewards are
counted in SQL in one transaction (server/store/engagement.py, `add_invite`, with the rule of
server/domain/invites.py). This process keeps only the codes (and learns other nodes' codes
by notice or on a miss).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final

from client_sdk.protocol import Code
from server.cluster.notices import Notice
from server.domain import fields
from server.domain.coupons import Coupon, CouponSpec
from server.domain.invites import DEFAULT_THRESHOLD
from server.engagement.coupons import Coupons, reward_spec
from server.engagement.plumbing import Plumbing, log, new_id
from server.errors import SoukError
from server.store.db import Row

INVITE_REWARD: Final = CouponSpec("amount", 500, 0, 0, "Thanks for inviting friends")


class Invites:
    """The invite codes of this process: code -> (shop, member) and back."""

    def __init__(self, plumbing: Plumbing, coupons: Coupons) -> None:
        self.p = plumbing
        self.coupons = coupons
        self.threshold = DEFAULT_THRESHOLD
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (shop, user)
        self.code_of: dict[tuple[str, str], str] = {}

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["codes"]:
            self._learn(r["code"], (r["shop"], r["user_id"]))

    def _learn(self, code: str, owner: tuple[str, str]) -> None:
        self.codes[code] = owner
        self.code_of[owner] = code

    async def on_code(self, n: Notice) -> None:
        self._learn(str(n["c"]), (str(n["s"]), str(n["u"])))

    async def code(self, shop: str, user: str) -> str:
        code = self.code_of.get((shop, user))
        if code is None:
            code = await self.p.store.add_code(
                f"i{secrets.token_urlsafe(6)}".replace("-", "x").replace("_", "y"), shop, user)
            self._learn(code, (shop, user))
            self.p.notify("code", c=code, s=shop, u=user)
        return code

    async def find_code(self, code: Any) -> tuple[str, str]:
        """`inviter_of_code`, loading a code made on another node."""
        c = fields.ident_value(code, "invite")
        if c not in self.codes and self.p.store.shared:
            found = await self.p.store.load_code(c)
            if found is not None:
                self._learn(c, found)
        return self.inviter_of_code(c)

    def inviter_of_code(self, code: Any) -> tuple[str, str]:
        c = fields.ident_value(code, "invite")
        found = self.codes.get(c)
        if found is None:
            raise SoukError(Code.NOT_FOUND, "unknown invite code")
        return found

    async def known_before(self, shop: str, user: str) -> bool:
        """From the record: a member (or invitee) of the shop before, on any node."""
        return await self.p.store.known_before(shop, user)

    async def joined(self, shop: str, invitee: str, group: str, inviter: str | None,
                     known_before: bool) -> dict[str, Any] | None:
        """After a successful group join: attribute it (once) and grant due rewards."""
        if inviter is None:
            return None
        if known_before or inviter == invitee:
            return {"counted": False}
        # decided in SQL: several nodes may attribute joins to one inviter at once, and the
        # invitee must count once per shop and each reward be granted once
        now = self.p.clock_ms()
        spec = reward_spec(INVITE_REWARD, now)

        def make(first: int, due: int) -> list[tuple[int, Coupon]]:
            return [(first + k, Coupon(new_id("c", now), shop, inviter, spec, now, "invite")) for k in range(due)]

        try:
            counted, rewards = await self.p.store.add_invite(
                shop, invitee, inviter, group, now, self.threshold, make)
        except Exception:
            log.exception("invite write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the invite; try again") from None
        if not counted:
            return {"counted": False}
        granted = [c for _, c in rewards]
        for c in granted:
            self.coupons.book.add(c)
        self.coupons.announce(granted, now)
        return {"counted": True, "inviter": inviter, "rewards": len(rewards)}

    async def stats(self, shop: str, user: str) -> dict[str, Any]:
        invited, rewarded = await self.p.store.invite_stats(shop, user)
        return {"invited": invited, "rewards": rewarded, "threshold": self.threshold}
