"""Verdicts: broken invariants fail, an overloaded generator is inconclusive, never a pass."""

from __future__ import annotations

import pytest

from loadtest.metrics import Metrics
from loadtest.slo import evaluate, parse_slo
from loadtest.verdict import FAIL, INCONCLUSIVE, PASS, Check, decide
from loadtest.watchdog import LAG_METRIC, SCHED_METRIC, Health, Limits, assess
from loadtest.workers import CapacityError, check_capacity, open_file_limit, split

MS = 1_000_000


def _fast() -> Metrics:
    m = Metrics(0)
    for _ in range(100):
        m.record("join", 5 * MS, now_ns=0)
    return m


def test_pass_fail_inconclusive() -> None:
    ok = evaluate([parse_slo("join.p99<600ms")], _fast())
    assert decide(ok, []).exit_code == PASS
    slow = evaluate([parse_slo("join.p99<1ms")], _fast())
    assert decide(slow, []).exit_code == FAIL
    saturated = Health(sustained=["generator process w0 above 90% CPU in 60% of seconds"])
    assert decide(ok, [], saturated).exit_code == INCONCLUSIVE  # the load was not offered
    assert decide(slow, [], saturated).exit_code == INCONCLUSIVE
    # but oversold stock is a failure whoever was slow
    assert decide(ok, [Check("exactly M sold", False, "sold 11 of 10")], saturated).exit_code == FAIL
    nothing = evaluate([parse_slo("event.p99<600ms")], _fast())
    assert decide(nothing, []).exit_code == INCONCLUSIVE


def test_a_hiccup_only_matters_when_it_could_explain_a_miss() -> None:
    hiccup = Health(transient=["generator event-loop lag max 300 ms > 250 ms"], max_delay_ms=300.0)
    met = evaluate([parse_slo("join.p99<600ms")], _fast())  # 5 ms observed
    assert decide(met, [], hiccup).exit_code == PASS  # delays only ever inflate latency
    near = evaluate([parse_slo("join.p99<4ms")], _fast())  # missed by 1 ms: the stall explains it
    assert decide(near, [], hiccup).exit_code == INCONCLUSIVE
    small = Health(transient=["lag"], max_delay_ms=0.5)
    assert decide(near, [], small).exit_code == FAIL  # a 0.5 ms stall cannot explain 1 ms


def test_watchdog_flags_lag_and_cpu() -> None:
    m = Metrics(0)
    for _ in range(50):
        m.record(LAG_METRIC, 1 * MS, now_ns=0)
        m.record(SCHED_METRIC, 1 * MS, now_ns=0)
    h = assess(m, {"w0": [20.0, 30.0, 25.0]})
    assert h.reasons == [] and 0.9 < h.max_delay_ms < 1.1
    m.record(LAG_METRIC, 300 * MS, now_ns=0)  # one stall: transient
    h = assess(m, {"w0": [20.0]}, Limits())
    assert h.sustained == [] and any("lag max" in r for r in h.transient)
    assert h.max_delay_ms >= 299
    for _ in range(20):  # many late dispatches: sustained
        m.record(SCHED_METRIC, 80 * MS, now_ns=0)
    h = assess(m, {"w0": [99.0, 98.0, 97.0, 20.0]}, Limits())
    assert any("late" in r for r in h.sustained)
    assert any("CPU" in r for r in h.sustained)


def test_capacity_refuses_what_cannot_fit() -> None:
    limit = open_file_limit()
    check_capacity(1000, 1, 10)
    with pytest.raises(CapacityError, match="--workers"):
        check_capacity(limit, 1, 10)
    check_capacity(limit, 2, 10) if limit * 1 < 28_000 - 10 else None
    with pytest.raises(CapacityError, match="ephemeral"):
        check_capacity(30_000, 4, 10)


def test_split() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(10_001, 2)) == 10_001


def test_soft_checks_defer_to_a_stalled_generator() -> None:
    ok = evaluate([parse_slo("join.p99<600ms")], _fast())
    gap = Check("no seq gap at any viewer", False, "10 missing", hard=False)
    assert decide(ok, [gap]).exit_code == FAIL
    assert decide(ok, [gap], Health(sustained=["loop lag"])).exit_code == INCONCLUSIVE
