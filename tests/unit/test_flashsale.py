"""Flash sale rules: every transition, every refusal, and generated interleavings."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.domain.catalog import Product
from server.domain.flashsale import FlashSale, Phase, sale_spec
from server.domain.throttle import PushThrottle
from server.errors import SoukError

T0 = 1_700_000_000_000


def product(stock: int = 100) -> Product:
    return Product("p1", "shop", "Tea", 1000, "CNY", stock, "", T0)


def make(stock: int = 10, limit: int = 2, start_in_ms: int = 0, duration_s: int = 60) -> FlashSale:
    spec = sale_spec(
        {
            "product": "p1",
            "price": 500,
            "stock": stock,
            "starts_at": T0 + start_in_ms,
            "duration_s": duration_s,
            "per_user_limit": limit,
        },
        T0,
    )
    return FlashSale.create("s1", "r1", spec, product(), T0)


def refused(code: str, fn: Any, *args: Any) -> SoukError:
    with pytest.raises(SoukError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


# -- transitions ---------------------------------------------------------------------------
def test_starts_live_when_start_is_now() -> None:
    sale = make()
    assert sale.phase is Phase.LIVE
    assert sale.next_deadline() == T0 + 60_000


def test_scheduled_then_live_then_ended_by_time() -> None:
    sale = make(start_in_ms=5_000)
    assert sale.phase is Phase.SCHEDULED
    assert sale.next_deadline() == T0 + 5_000
    assert not sale.tick(T0 + 4_999)
    assert sale.tick(T0 + 5_000)
    assert sale.phase is Phase.LIVE
    assert sale.tick(T0 + 65_000)
    assert sale.phase is Phase.ENDED
    assert sale.returned == 10
    assert sale.next_deadline() is None


def test_scheduled_straight_to_ended_when_window_missed() -> None:
    sale = make(start_in_ms=5_000)
    assert sale.tick(T0 + 10_000_000)
    assert sale.phase is Phase.ENDED


def test_live_to_sold_out_on_last_unit_and_stays() -> None:
    sale = make(stock=3, limit=3)
    sale.buy("a", "", 2, "k1", "o1", T0)
    assert sale.phase is Phase.LIVE
    sale.buy("b", "", 1, "k1", "o2", T0)
    assert sale.phase is Phase.SOLD_OUT and sale.stock_left == 0
    assert not sale.tick(T0 + 100_000)  # sold_out is final: nothing to return at the end
    assert sale.phase is Phase.SOLD_OUT


def test_cancel_from_scheduled_and_live_returns_unsold() -> None:
    sale = make(start_in_ms=5_000)
    assert sale.cancel(T0) == 10
    assert sale.phase is Phase.CANCELLED
    sale = make(stock=10, limit=3)
    sale.buy("a", "", 3, "k", "o1", T0)
    assert sale.cancel(T0 + 1) == 7
    assert sale.returned == 7


def test_cancel_refused_when_over_or_sold_out() -> None:
    sale = make()
    sale.tick(T0 + 60_000)
    refused("ended", sale.cancel, T0 + 60_001)
    sale = make(stock=1, limit=1)
    sale.buy("a", "", 1, "k", "o1", T0)
    refused("sold_out", sale.cancel, T0)


# -- refusals ------------------------------------------------------------------------------
def test_not_live_before_start() -> None:
    sale = make(start_in_ms=5_000)
    err = refused("not_live", sale.buy, "a", "", 1, "k", "o1", T0 + 10)
    assert err.extra["starts_at"] == T0 + 5_000


def test_buy_after_start_works_even_before_timer() -> None:
    sale = make(start_in_ms=5_000)
    order = sale.buy("a", "", 1, "k", "o1", T0 + 5_000)
    assert order.id == "o1" and sale.phase is Phase.LIVE


def test_ended_after_end_and_after_cancel() -> None:
    sale = make()
    refused("ended", sale.buy, "a", "", 1, "k", "o1", T0 + 60_000)
    assert sale.phase is Phase.ENDED
    sale = make()
    sale.cancel(T0)
    refused("ended", sale.buy, "a", "", 1, "k", "o1", T0)


def test_sold_out_and_all_or_nothing() -> None:
    sale = make(stock=3, limit=5)
    sale.buy("a", "", 2, "k", "o1", T0)
    err = refused("sold_out", sale.buy, "b", "", 2, "k", "o2", T0)
    assert err.extra["stock_left"] == 1
    assert sale.stock_left == 1  # nothing partial was taken
    sale.buy("b", "", 1, "k2", "o3", T0)
    refused("sold_out", sale.buy, "c", "", 1, "k", "o4", T0)


def test_per_user_limit_across_orders() -> None:
    sale = make(stock=10, limit=2)
    sale.buy("a", "", 1, "k1", "o1", T0)
    err = refused("limit_reached", sale.buy, "a", "", 2, "k2", "o2", T0)
    assert err.extra["remaining"] == 1
    sale.buy("a", "", 1, "k3", "o3", T0)
    refused("limit_reached", sale.buy, "a", "", 1, "k4", "o4", T0)
    assert sale.units_of("a") == 2


def test_idempotent_key_returns_same_order_even_after_sold_out() -> None:
    sale = make(stock=1, limit=1)
    first = sale.buy("a", "", 1, "k", "o1", T0)
    again = sale.buy("a", "", 1, "k", "o2", T0 + 1)
    assert again is first and sale.stock_left == 0
    refused("conflict", sale.buy, "a", "", 2, "k", "o3", T0)
    # another user may use the same key string
    refused("sold_out", sale.buy, "b", "", 1, "k", "o4", T0)


@pytest.mark.parametrize("qty", [0, -1, 1.0, True, "1", None, 10**9])
def test_bad_qty_refused(qty: Any) -> None:
    sale = make()
    refused("invalid", sale.buy, "a", "", qty, "k", "o1", T0)
    assert sale.stock_left == 10


@pytest.mark.parametrize("key", ["", "x" * 65, 5, None, "a\nb"])
def test_bad_key_refused(key: Any) -> None:
    refused("invalid", make().buy, "a", "", 1, key, "o1", T0)


@pytest.mark.parametrize(
    "change",
    [
        {"price": 0},
        {"price": 1.5},
        {"price": "100"},
        {"stock": 0},
        {"stock": 10**9},
        {"duration_s": 0},
        {"duration_s": 86_401},
        {"per_user_limit": 0},
        {"product": ""},
        {"product": "a b"},
        {"product": None},
        {"starts_at": "now"},
        {"starts_at": T0 + 10**12},
    ],
)
def test_sale_spec_refuses_bad_fields(change: dict[str, Any]) -> None:
    raw = {"product": "p1", "price": 100, "stock": 5, "duration_s": 10, **change}
    refused("invalid", sale_spec, raw, T0)


def test_sale_spec_refuses_non_map_and_clamps_past_start() -> None:
    refused("invalid", sale_spec, ["product"], T0)
    spec = sale_spec({"product": "p1", "price": 1, "stock": 1, "duration_s": 1, "starts_at": 5}, T0)
    assert spec.starts_at == T0 and spec.ends_at == T0 + 1000 and spec.per_user_limit == 1


# -- release (a durable write failed) ------------------------------------------------------
def test_release_gives_units_back_and_reopens_sold_out() -> None:
    sale = make(stock=2, limit=2)
    order = sale.buy("a", "", 2, "k", "o1", T0)
    assert sale.phase is Phase.SOLD_OUT
    assert sale.release(order, T0 + 1) == 0
    assert sale.phase is Phase.LIVE and sale.stock_left == 2 and sale.units_of("a") == 0
    assert sale.order_for("a", "k") is None
    assert sale.release(order, T0 + 1) == 0  # twice is harmless


def test_release_after_close_returns_units_to_caller() -> None:
    sale = make(stock=5, limit=2)
    order = sale.buy("a", "", 2, "k", "o1", T0)
    sale.tick(T0 + 60_000)
    assert sale.phase is Phase.ENDED and sale.returned == 3
    assert sale.release(order, T0 + 60_001) == 2
    assert sale.returned == 5


def test_release_of_sold_out_after_end_ends_it() -> None:
    sale = make(stock=1, limit=1)
    order = sale.buy("a", "", 1, "k", "o1", T0)
    assert sale.release(order, T0 + 61_000) == 1
    assert sale.phase is Phase.ENDED


# -- throttle ------------------------------------------------------------------------------
def test_push_throttle_at_most_one_per_interval() -> None:
    th = PushThrottle(100)
    assert th.note(0) == 0
    th.pushed(0)
    assert th.note(10) == 100  # schedule one flush
    assert th.note(20) is None  # already scheduled
    th.pushed(100)
    assert th.note(250) == 250


# -- generated interleavings ---------------------------------------------------------------
users = st.sampled_from(["a", "b", "c", "d"])
keys = st.sampled_from(["k1", "k2", "k3"])


class SaleMachine(RuleBasedStateMachine):
    """Random buys, retries, failed writes, cancels and clock moves; invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.sale = make(stock=7, limit=3, start_in_ms=1_000, duration_s=5)
        self.orders: dict[tuple[str, str], Any] = {}
        self.returned_to_product = 0
        self.n = 0

    @rule(user=users, key=keys, qty=st.integers(min_value=-1, max_value=4))
    def buy(self, user: str, key: str, qty: int) -> None:
        self.n += 1
        left_before = self.sale.stock_left
        try:
            order = self.sale.buy(user, "", qty, key, f"o{self.n}", self.now)
        except SoukError as err:
            assert err.code in {
                "invalid",
                "sold_out",
                "limit_reached",
                "not_live",
                "ended",
                "conflict",
            }
            assert self.sale.stock_left == left_before
            return
        known = self.orders.get((user, key))
        if known is not None:
            assert order is known
            assert self.sale.stock_left == left_before
        else:
            assert order.id == f"o{self.n}" and 1 <= qty
            assert self.sale.stock_left == left_before - qty
            self.orders[(user, key)] = order

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data())
    def write_fails(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders.pop(key)
        self.returned_to_product += self.sale.release(order, self.now)

    @rule()
    def cancel(self) -> None:
        try:
            self.returned_to_product += self.sale.cancel(self.now)
        except SoukError as err:
            assert err.code in {"ended", "sold_out"}

    @rule(ms=st.integers(min_value=0, max_value=3_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms
        before = self.sale.phase
        left = self.sale.stock_left
        if (
            self.sale.tick(self.now)
            and self.sale.phase is Phase.ENDED
            and before is not Phase.ENDED
        ):
            self.returned_to_product += left

    @invariant()
    def no_oversell_and_books_balance(self) -> None:
        sold = sum(o.qty for o in self.orders.values())
        assert self.sale.stock_left >= 0
        assert self.sale.units_sold == sold
        if self.sale.phase in (Phase.ENDED, Phase.CANCELLED):
            assert sold + self.returned_to_product == self.sale.stock
            assert self.sale.returned == self.returned_to_product
        else:
            assert self.sale.stock_left + sold == self.sale.stock
        if self.sale.phase not in (Phase.ENDED, Phase.CANCELLED):
            assert (self.sale.phase is Phase.SOLD_OUT) == (self.sale.stock_left == 0)

    @invariant()
    def per_user_limit_holds(self) -> None:
        per_user: dict[str, int] = {}
        for (user, _), o in self.orders.items():
            per_user[user] = per_user.get(user, 0) + o.qty
        for user, units in per_user.items():
            assert units <= 3
            assert self.sale.units_of(user) == units


TestSaleMachine = SaleMachine.TestCase
TestSaleMachine.settings = settings(max_examples=75, stateful_step_count=35, deadline=None)


def test_observe_follows_the_cluster_count_and_phases() -> None:
    sale = make(stock=10, limit=5)
    sale.buy("a", "", 2, "k", "o1", T0)  # this node's view: 8 left
    assert not sale.observe(12)  # never above what this node knows
    assert sale.stock_left == 8
    assert not sale.observe(3) and sale.stock_left == 3  # other nodes sold 5
    refused("sold_out", sale.buy, "b", "", 4, "k", "o2", T0)
    assert sale.observe(0) and sale.phase is Phase.SOLD_OUT
    assert not sale.observe(None, Phase.LIVE)  # an older phase does not go back
    assert sale.observe(None, Phase.ENDED) and sale.phase is Phase.ENDED
    assert not sale.observe(5, Phase.CANCELLED)  # over is final


def test_observe_starts_a_scheduled_sale_and_cancels() -> None:
    sale = make(start_in_ms=60_000)
    assert sale.observe(None, Phase.LIVE) and sale.phase is Phase.LIVE
    assert sale.observe(None, Phase.CANCELLED) and sale.returned == 10
