"""HDR metrics: percentiles, per-second series, exact merge across processes, JSON round trip."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.metrics import Metrics

MS = 1_000_000
S = 1_000_000_000


def test_percentiles_in_ms() -> None:
    m = Metrics(0)
    for v in range(1, 1001):  # 1..1000 ms
        m.record("join", v * MS, now_ns=0)
    s = m.summary("join")
    assert s.count == 1000
    assert abs(s.percentiles_ms[50.0] - 500) <= 1
    assert abs(s.percentiles_ms[99.0] - 990) <= 1
    assert abs(s.max_ms - 1000) <= 1


def test_merge_equals_recording_everything_in_one() -> None:
    a, b, whole = Metrics(0), Metrics(0), Metrics(0)
    for i in range(500):
        (a if i % 2 else b).record("event", (i + 1) * MS, now_ns=(i % 5) * S)
        whole.record("event", (i + 1) * MS, now_ns=(i % 5) * S)
    a.timeout("event", 2, now_ns=S)
    b.error("event", "closed", now_ns=S)
    whole.timeout("event", 2, now_ns=S)
    whole.error("event", "closed", now_ns=S)
    a.count("frames", 3)
    b.count("frames", 4)
    a.merge(b)
    sa, sw = a.summary("event"), whole.summary("event")
    assert (sa.count, sa.errors, sa.timeouts) == (sw.count, sw.errors, sw.timeouts) == (500, 1, 2)
    assert sa.percentiles_ms == sw.percentiles_ms
    assert a.counters["frames"] == 7
    assert a.per_second("event") == whole.per_second("event")


def test_merge_aligns_series_of_workers_started_later() -> None:
    coordinator, worker = Metrics(t0_ns=10 * S), Metrics(t0_ns=12 * S)
    worker.record("join", MS, now_ns=13 * S)  # second 1 of the worker = second 3 of the run
    coordinator.merge(worker)
    assert [p["t"] for p in coordinator.per_second("join")] == [3.0]


def test_per_second_series() -> None:
    m = Metrics(0)
    for sec in range(3):
        for v in (1, 2, 100):
            m.record("chat_ack", v * MS, now_ns=sec * S + 1)
    m.timeout("chat_ack", now_ns=2 * S)
    series = m.per_second("chat_ack")
    assert [p["t"] for p in series] == [0.0, 1.0, 2.0]
    assert all(p["count"] == 3 for p in series)
    assert series[2]["failures"] == 1
    assert 99 <= series[0]["max"] <= 101


@settings(max_examples=5, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**10), min_size=1, max_size=60))
def test_json_round_trip(values: list[int]) -> None:
    m = Metrics(0)
    for i, v in enumerate(values):
        m.record("x", v, now_ns=(i % 3) * S)
    m.error("x", "sold_out")
    m.count("units_sold", len(values))
    back = Metrics.from_dict(orjson.loads(orjson.dumps(m.to_dict())))
    assert back.summary("x").percentiles_ms == m.summary("x").percentiles_ms
    assert back.summary("x").count == len(values)
    assert back.errors["x"]["sold_out"] == 1
    assert back.counters == m.counters
    assert back.per_second("x") == m.per_second("x")
