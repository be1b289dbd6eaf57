"""Unit tests of the sans-I/O rules: coupons, polls, check-in, invites, layers, insights."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain import insights
from server.domain.checkin import Streak, check_in, points_for, redeem_value
from server.domain.coupons import Coupon, CouponBook, CouponSpec, coupon_spec
from server.domain.invites import rewards_due
from server.domain.layers import MemberStats, Thresholds, layer_of
from server.domain.polls import new_poll
from server.errors import SoukError

NOW = 1_800_000_000_000


def book_with(spec: CouponSpec, user: str = "u") -> CouponBook:
    b = CouponBook()
    b.add(Coupon("c1", "shop", user, spec, NOW))
    return b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "fail", "commit"]), st.sampled_from(["u", "v"]),
                          st.integers(0, 5000)), max_size=40))
def test_coupon_never_spent_twice(steps: list[tuple[str, str, int]]) -> None:
    """Whatever the interleaving of reservations, failed writes and commits, at most one
    order ever holds the coupon and at most one redemption happens."""
    b = book_with(CouponSpec("amount", 300, 1000, NOW + 10_000))
    holder: str | None = None
    redeemed = 0
    for i, (what, user, amount) in enumerate(steps):
        if what == "reserve":
            try:
                d = b.reserve("c1", user, amount, f"o{i}", NOW)
            except SoukError as e:
                assert e.code in ("not_found", "conflict", "invalid")
                continue
            assert holder is None and user == "u" and amount >= 1000 and d == 300
            holder = f"o{i}"
        elif what == "fail" and holder is not None and not b.coupons["c1"].redeemed:
            b.release("c1", holder)
            holder = None
        elif what == "commit" and holder is not None and not b.coupons["c1"].redeemed:
            b.redeemed("c1", holder)
            redeemed += 1
    assert redeemed <= 1


def test_coupon_expiry_percent_and_spec() -> None:
    b = book_with(CouponSpec("percent", 15, 0, NOW + 1000))
    assert b.check("c1", "u", 2000, NOW) == 300
    with pytest.raises(SoukError) as e:
        b.check("c1", "u", 2000, NOW + 1000)
    assert e.value.code == "ended"
    assert coupon_spec({"value": 500, "valid_s": 3600}, NOW).expires_at == NOW + 3_600_000
    for bad in ({"value": True}, {"value": 10, "min_spend": -1}, {"value": 900, "min_spend": 500},
                {"kind": "percent", "value": 0}, {"value": 1, "title": "x" * 201}):
        with pytest.raises(SoukError):
            coupon_spec(bad, NOW)
    assert Coupon("c", "s", "u", CouponSpec("amount", 500, 0, NOW), NOW).discount_for(200) == 200


def test_poll_one_vote_per_member_changeable() -> None:
    p = new_poll("p", "s", "group", "g", {"question": "A or B?", "options": ["A", "B", "C"]}, "st", NOW)
    assert p.vote("u", 0, NOW) is True
    assert p.vote("u", 0, NOW) is False
    assert p.vote("u", 2, NOW) is True
    p.vote("v", 2, NOW)
    assert p.tally() == [0, 0, 2] and len(p.votes) == 2
    for bad in (3, -1, True, "0", 1.0):
        with pytest.raises(SoukError):
            p.vote("w", bad, NOW)
    p.close(NOW + 1)
    with pytest.raises(SoukError) as e:
        p.vote("w", 0, NOW + 2)
    assert e.value.code == "ended"
    timed = new_poll("q", "s", "room", "r", {"question": "?", "options": ["a", "b"], "closes_at": NOW + 5000},
                     "st", NOW)
    assert timed.is_open(NOW + 4999) and not timed.is_open(NOW + 5000)
    for bad in ({"question": "?", "options": ["a", "a"]}, {"question": "", "options": ["a", "b"]},
                {"question": "?", "options": ["a"] + [str(i) for i in range(10)]},
                {"question": "?", "options": ["a", "b"], "closes_at": NOW - 1}):
        with pytest.raises(SoukError):
            new_poll("x", "s", "room", "r", bad, "st", NOW)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3)), max_size=60))
def test_poll_tally_counts_each_member_once(votes: list[tuple[str, int]]) -> None:
    p = new_poll("p", "s", "room", "r", {"question": "?", "options": ["w", "x", "y", "z"]}, "st", NOW)
    last: dict[str, int] = {}
    for user, opt in votes:
        p.vote(user, opt, NOW)
        last[user] = opt
    assert sum(p.tally()) == len(last)
    assert p.tally() == [sum(1 for v in last.values() if v == i) for i in range(4)]


def test_checkin_streaks() -> None:
    day = 86_400_000
    s, pts = check_in(None, NOW)
    assert (s.streak, pts) == (1, 10)
    with pytest.raises(SoukError):
        check_in(s, NOW + 1000)
    s2, pts2 = check_in(s, NOW + day)
    assert (s2.streak, pts2) == (2, 12)
    s3, _ = check_in(s2, NOW + 3 * day)
    assert s3.streak == 1 and s3.total == 3
    assert points_for(100) == points_for(7) == 22
    assert redeem_value(200, 250) == 200
    for bad, bal in ((50, 1000), (300, 299), (True, 1000)):
        with pytest.raises(SoukError):
            redeem_value(bad, bal)
    assert Streak(1, 1, 1).streak == 1


def test_invite_rewards_due_are_the_thresholds_crossed_not_yet_granted() -> None:
    assert [rewards_due(n, 0) for n in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert rewards_due(6, 2) == 0 and rewards_due(9, 2) == 1  # never twice for the same invitees
    assert rewards_due(3, 5) == 0  # never negative
    assert rewards_due(10, 0, threshold=5) == 2


def test_layers() -> None:
    t = Thresholds(high_value_aov=10_000, high_activity_orders=3, high_activity_engagement=20)
    assert layer_of(MemberStats("u", orders=1, spent=15_000), t) == "high_value"
    assert layer_of(MemberStats("u", orders=3, spent=3000), t) == "high_activity"
    assert layer_of(MemberStats("u", messages=15, votes=3, checkins=2), t) == "high_activity"
    assert layer_of(MemberStats("u", orders=1, spent=500), t) == "medium"
    assert layer_of(MemberStats("u", messages=2), t) == "medium"
    assert layer_of(MemberStats("u"), t) == "dormant"
    assert MemberStats("u", orders=2, spent=301).aov == 150
    assert t.updated({"high_value_aov": 5}).high_value_aov == 5
    for bad in ({"high_value_aov": 0}, {"high_activity_orders": "3"}):
        with pytest.raises(SoukError):
            t.updated(bad)


def test_insights_arithmetic() -> None:
    assert insights.percentile([], 50) is None
    assert insights.percentile([1, 2, 3, 4], 50) == 2
    assert insights.percentile(list(range(1, 11)), 90) == 9
    assert insights.percentile([5], 90) == 5
    assert insights.rate(1, 0) == 0.0 and insights.rate(1, 3) == 0.3333
    w = insights.WEEK_MS
    rows = insights.weekly([w * 10 + 1, w * 10 + 2, w * 11], [w * 11 + 5], 4, {10: 7, 11: 3},
                          {11: ["coupon amount:100"]}, 10, 11)
    assert rows[0] == {"week_start": 10 * w, "members_start": 4, "joins": 2, "exits": 0, "exit_rate": 0.0,
                       "messages": 7, "actions": []}
    assert rows[1]["members_start"] == 6 and rows[1]["exit_rate"] == round(1 / 7, 4)
    assert rows[1]["messages_change"] == -4 and rows[1]["actions"] == ["coupon amount:100"]
