"""Team-buy rules: open, join by id, match, fill, expire, undo, and generated interleavings."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.domain.catalog import Product
from server.domain.teambuy import Joined, TeamBuyOffer, TeamStatus, offer_spec
from server.errors import SoukError

T0 = 1_700_000_000_000


def make(size: int = 3, window_s: int = 60, stock: int | None = None) -> TeamBuyOffer:
    raw: dict[str, Any] = {"product": "p1", "price": 300, "size": size, "window_s": window_s}
    if stock is not None:
        raw["stock"] = stock
    product = Product("p1", "shop", "Tea", 1000, "CNY", 100, "", T0)
    return TeamBuyOffer.create("tb1", "r1", offer_spec(raw), product, T0)


def opened(offer: TeamBuyOffer, user: str, team: str, now: int = T0) -> Joined:
    j = offer.open(user, user.upper(), "k", team, f"o-{user}", now)
    offer.committed(j)  # the adapter calls this once the opening is durable
    return j


def refused(code: str, fn: Any, *args: Any) -> SoukError:
    with pytest.raises(SoukError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


def test_open_makes_pending_leader_order() -> None:
    offer = make()
    j = opened(offer, "a", "t1")
    assert j.new and not j.filled
    assert j.team.leader == "a" and j.team.status is TeamStatus.OPEN
    assert j.team.expires_at == T0 + 60_000
    assert j.order.status == "pending" and j.order.team == "t1" and j.order.price == 300
    assert offer.open_team_of("a") == "t1"
    assert offer.next_deadline() == T0 + 60_000


def test_join_by_id_fills_and_confirms_every_member() -> None:
    offer = make(size=3)
    opened(offer, "a", "t1")
    j = offer.join("b", "B", "k", "t1", "o-b", T0 + 1)
    assert not j.filled and j.team.missing == 1
    j = offer.join("c", "C", "k", "t1", "o-c", T0 + 2)
    assert j.filled and j.team.status is TeamStatus.CONFIRMED
    assert [m.status for m in j.team.members] == ["confirmed"] * 3
    assert j.order.status == "confirmed"
    # until the filling write is durable, the members stay bound to this team
    refused("already_in_team", offer.open, "a", "", "k2", "t2", "o2", T0)
    offer.committed(j)
    assert offer.open_team_of("a") is None  # free to open another team now
    assert offer.next_deadline() is None


def test_join_full_failed_unknown_and_undurable_teams_refused() -> None:
    offer = make(size=2)
    opened(offer, "a", "t1")
    offer.join("b", "", "k", "t1", "o-b", T0)
    refused("team_full", offer.join, "c", "", "k", "t1", "o-c", T0)
    refused("not_found", offer.join, "c", "", "k", "nope", "o-c", T0)
    pending = offer.open("d", "", "k", "t2", "o-d", T0)  # not yet durable
    refused("not_found", offer.join, "c", "", "k", "t2", "o-c", T0)
    refused("not_found", offer.join, "c", "", "k", None, "o-c", T0)
    offer.committed(pending)
    offer.expire(T0 + 60_000)
    refused("ended", offer.join, "c", "", "k", "t2", "o-c", T0 + 60_001)


def test_one_open_team_per_buyer() -> None:
    offer = make()
    opened(offer, "a", "t1")
    refused("already_in_team", offer.open, "a", "", "k2", "t2", "o2", T0)
    opened(offer, "b", "t2")
    err = refused("already_in_team", offer.join, "a", "", "k3", "t2", "o3", T0)
    assert err.extra["team"] == "t1"
    refused("already_in_team", offer.join, "a", "", "k3", "t1", "o3", T0)  # own team too


def test_match_picks_team_closest_to_full_oldest_first() -> None:
    offer = make(size=4)
    opened(offer, "a", "t1", T0)
    opened(offer, "b", "t2", T0 + 1)
    offer.join("c", "", "k", "t2", "o-c", T0 + 2)
    j = offer.join("d", "", "k", None, "o-d", T0 + 3)
    assert j.team.id == "t2"  # 2 members beats 1
    opened(offer, "e", "t3", T0 + 4)
    offer.join("f", "", "k", "t3", "o-f", T0 + 5)
    offer.join("g", "", "k", "t1", "o-g", T0 + 6)  # t1 and t3 both 2/4: t1 is older
    assert offer.join("h", "", "k", None, "o-h", T0 + 7).team.id == "t2"  # 3/4
    assert offer.join("i", "", "k", None, "o-i", T0 + 8).team.id == "t1"


def test_match_with_no_open_team() -> None:
    refused("not_found", make().join, "a", "", "k", None, "o", T0)


def test_deadline_fails_team_and_releases_holds() -> None:
    offer = make(size=3, stock=6)
    opened(offer, "a", "t1")
    offer.join("b", "", "k", "t1", "o-b", T0)
    assert offer.stock_left == 3
    assert offer.expire(T0 + 59_999) == []
    failed = offer.expire(T0 + 60_000)
    assert [t.id for t in failed] == ["t1"]
    assert failed[0].status is TeamStatus.FAILED
    assert [m.status for m in failed[0].members] == ["failed", "failed"]
    assert offer.stock_left == 6
    assert offer.open_team_of("a") is None and offer.open_team_of("b") is None
    assert offer.expire(T0 + 70_000) == []  # a team fails once


def test_stock_holds_size_per_team_and_sold_out() -> None:
    offer = make(size=2, stock=4)
    opened(offer, "a", "t1")
    opened(offer, "b", "t2")
    assert offer.stock_left == 0
    refused("sold_out", offer.open, "c", "", "k", "t3", "o-c", T0)
    offer.join("c", "", "k", "t1", "o-c", T0)  # joining never needs more stock
    assert offer.teams["t1"].status is TeamStatus.CONFIRMED


def test_idempotent_key_replays_current_state() -> None:
    offer = make(size=2)
    first = opened(offer, "a", "t1")
    again = offer.open("a", "", "k", "t9", "o9", T0)
    assert not again.new and again.team is first.team and again.order.id == first.order.id
    offer.join("b", "", "kb", "t1", "o-b", T0)
    replay = offer.join("b", "", "kb", "t1", "o-zz", T0)
    assert not replay.new and replay.order.status == "confirmed"
    assert offer.open("a", "", "k", "t9", "o9", T0).order.status == "confirmed"


def test_undo_failed_open_and_failed_filling_join() -> None:
    offer = make(size=2, stock=2)
    j = offer.open("a", "", "k", "t1", "o-a", T0)
    offer.undo(j)
    assert "t1" not in offer.teams and offer.stock_left == 2 and offer.open_team_of("a") is None
    j = opened(offer, "a", "t1")
    fill = offer.join("b", "", "k", "t1", "o-b", T0)
    assert fill.filled
    offer.undo(fill)
    team = offer.teams["t1"]
    assert team.status is TeamStatus.OPEN and [m.user for m in team.members] == ["a"]
    assert team.members[0].status == "pending"
    assert offer.open_team_of("a") == "t1" and offer.open_team_of("b") is None
    assert offer.join("b", "", "k", "t1", "o-b2", T0).filled  # the key is free again


def test_members_of_a_filling_team_cannot_join_elsewhere_before_commit() -> None:
    offer = make(size=2)
    opened(offer, "a", "t1")
    opened(offer, "x", "t2")
    fill = offer.join("b", "", "k", "t1", "o-b", T0)
    refused("already_in_team", offer.join, "a", "", "k2", "t2", "o-a2", T0)
    offer.undo(fill)  # the write failed: a is still (only) in t1, which is open again
    assert offer.open_team_of("a") == "t1" and offer.teams["t1"].status is TeamStatus.OPEN


@pytest.mark.parametrize(
    "change",
    [
        {"size": 1},
        {"size": 51},
        {"size": 2.0},
        {"window_s": 0},
        {"window_s": 10**9},
        {"price": -5},
        {"price": True},
        {"stock": 1},  # less than one team
        {"product": 3},
    ],
)
def test_offer_spec_refuses_bad_fields(change: dict[str, Any]) -> None:
    raw = {"product": "p1", "price": 100, "size": 2, "window_s": 10, **change}
    refused("invalid", offer_spec, raw)


@pytest.mark.parametrize("team", [5, "", "a b", "x" * 65])
def test_bad_team_id_refused(team: Any) -> None:
    offer = make()
    opened(offer, "a", "t1")
    refused("invalid", offer.join, "b", "", "k", team, "o", T0)


# -- generated interleavings ---------------------------------------------------------------
users = st.sampled_from(["a", "b", "c", "d", "e", "f"])
keys = st.sampled_from(["k1", "k2"])


class TeamMachine(RuleBasedStateMachine):
    """Random opens, joins (by id or matched) whose writes commit or fail later (in the
    order they were made, as the single writer queue does), interleaved with deadlines."""

    SIZE = 3
    STOCK = 9

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.offer = make(size=self.SIZE, window_s=10, stock=self.STOCK)
        self.n = 0
        self.in_flight: list[Joined] = []

    def _ids(self) -> tuple[str, str]:
        self.n += 1
        return f"t{self.n}", f"o{self.n}"

    @rule(user=users, key=keys)
    def open(self, user: str, key: str) -> None:
        team_id, order_id = self._ids()
        try:
            j = self.offer.open(user, "", key, team_id, order_id, self.now)
        except SoukError as err:
            assert err.code in {"already_in_team", "sold_out"}
            return
        if j.new:
            self.in_flight.append(j)

    @rule(user=users, key=keys, pick=st.integers(min_value=0, max_value=20), by_id=st.booleans())
    def join(self, user: str, key: str, pick: int, by_id: bool) -> None:
        _, order_id = self._ids()
        team = f"t{pick}" if by_id else None
        try:
            j = self.offer.join(user, "", key, team, order_id, self.now)
        except SoukError as err:
            assert err.code in {"already_in_team", "not_found", "team_full", "ended"}
            return
        if j.new:
            self.in_flight.append(j)

    @precondition(lambda self: bool(self.in_flight))
    @rule(ok=st.booleans())
    def write_settles(self, ok: bool) -> None:
        j = self.in_flight.pop(0)  # one writer queue: writes complete in the order made
        if ok:
            self.offer.committed(j)
        else:
            self.offer.undo(j)

    @rule(ms=st.integers(min_value=0, max_value=6_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms
        for team in self.offer.expire(self.now):
            assert team.status is TeamStatus.FAILED

    @invariant()
    def teams_are_sound(self) -> None:
        open_of: dict[str, str] = {}
        held = 0
        for team in self.offer.teams.values():
            users_in = [m.user for m in team.members]
            assert len(users_in) == len(set(users_in)) and 1 <= len(users_in) <= team.size
            statuses = {m.status for m in team.members}
            if team.status is TeamStatus.CONFIRMED:
                assert len(users_in) == team.size and statuses == {"confirmed"}
                held += team.size
            elif team.status is TeamStatus.FAILED:
                assert statuses == {"failed"}
            else:
                assert len(users_in) < team.size and statuses == {"pending"}
                assert team.expires_at > self.now or team.expires_at <= self.now
                held += team.size
                for u in users_in:
                    assert u not in open_of, "a buyer in two open teams"
                    open_of[u] = team.id
        for u, t in open_of.items():
            assert self.offer.open_team_of(u) == t
        assert self.offer.stock_left is not None
        assert self.offer.stock_left >= 0
        assert self.offer.stock_left + held == self.STOCK


TestTeamMachine = TeamMachine.TestCase
TestTeamMachine.settings = settings(max_examples=75, stateful_step_count=35, deadline=None)


def stored_team(offer: TeamBuyOffer, team: str, users: list[str],
                status: TeamStatus = TeamStatus.OPEN) -> Any:
    """A team as another node's writes left it in the store."""
    other = make(size=offer.size)
    j = other.open(users[0], "", "k", team, f"o-{users[0]}", T0)
    other.committed(j)
    for u in users[1:]:
        other.join(u, "", "k", team, f"o-{u}", T0)
    j.team.status = status
    return j.team


def test_settle_adopts_members_from_other_nodes_and_keeps_pending_ones() -> None:
    offer = make(size=4)
    opened(offer, "a", "t1")
    mine = offer.join("b", "", "k", "t1", "o-b", T0)  # this node's join, still being written
    offer.settle(stored_team(offer, "t1", ["a", "x"]), pending={"o-b"})
    team = offer.teams["t1"]
    assert [m.user for m in team.members] == ["a", "x", "b"]
    assert offer.open_team_of("x") == "t1" and mine.team is team
    offer.settle(stored_team(offer, "t1", ["a", "x", "b", "y"], TeamStatus.CONFIRMED))
    assert team.status is TeamStatus.CONFIRMED and offer.open_team_of("a") is None
    opened(offer, "a", "t2")  # free again


def test_sync_reports_teams_settled_elsewhere_and_forget_undoes_a_refused_join() -> None:
    offer = make(size=3, stock=9)
    opened(offer, "a", "t1")
    opened(offer, "b", "t2")
    gone = offer.sync([stored_team(offer, "t2", ["b"]), stored_team(offer, "t3", ["c"])], 3)
    assert [t.id for t in gone] == ["t1"]  # open here, not open in the store any more
    assert offer.stock_left == 3 and offer.open_team_of("c") == "t3"
    j = offer.join("d", "", "k", "t3", "o-d", T0)
    offer.forget(j)  # the store said full
    assert [m.user for m in offer.teams["t3"].members] == ["c"]
    assert offer.open_team_of("d") is None
