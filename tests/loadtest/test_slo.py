"""SLO expressions: syntax, units, unknown names refused, failures never flatter a percentile."""

from __future__ import annotations

import math

import pytest

from loadtest.metrics import Metrics
from loadtest.slo import SloError, default_slos, evaluate, parse_slo

MS = 1_000_000


@pytest.mark.parametrize(
    ("text", "metric", "stat", "op", "threshold"),
    [
        ("join.p99<600ms", "join", "p99", "<", 600.0),
        ("event.p99.9 <= 1.5s", "event", "p99.9", "<=", 1500.0),
        ("buy.failure_rate<1%", "buy", "failure_rate", "<", 1.0),
        ("buy.timeouts<1", "buy", "timeouts", "<", 1.0),
        ("first_frame.max<2s", "first_frame", "max", "<", 2000.0),
        ("join.count>=10", "join", "count", ">=", 10.0),
    ],
)
def test_parse(text: str, metric: str, stat: str, op: str, threshold: float) -> None:
    slo = parse_slo(text, ["join", "event", "buy", "first_frame"])
    assert (slo.metric, slo.stat, slo.op, slo.threshold) == (metric, stat, op, threshold)


@pytest.mark.parametrize(
    "text",
    [
        "join.p99<600",  # latency without unit
        "join.p99<600%",  # latency in %
        "buy.failure_rate<1ms",  # rate not in %
        "join.count<5ms",  # count with unit
        "join.p0<1ms",  # percentile out of range
        "join.p101<1ms",
        "join.median<1ms",  # unknown stat
        "join<600ms",  # no stat
        "join.p99 ~ 600ms",
        "",
    ],
)
def test_bad_syntax_refused(text: str) -> None:
    with pytest.raises(SloError):
        parse_slo(text, ["join", "buy"])


def test_unknown_metric_is_an_error_not_a_pass() -> None:
    with pytest.raises(SloError, match="unknown metric 'jion'"):
        parse_slo("jion.p99<600ms", ["join", "event"])


def test_defaults_cover_join_and_event_only_when_measured() -> None:
    assert [s.text for s in default_slos(["join", "event", "publish"])] == ["join.p99<600ms", "event.p99<600ms"]
    assert [s.text for s in default_slos(["join", "buy"])] == ["join.p99<600ms"]


def test_missing_events_count_as_infinitely_slow() -> None:
    m = Metrics(0)
    for _ in range(97):
        m.record("event", 5 * MS, now_ns=0)
    m.timeout("event", 3, now_ns=0)  # 3 % never arrived
    [res] = evaluate([parse_slo("event.p99<600ms")], m)
    assert math.isinf(res.observed) and res.passed is False
    [p90] = evaluate([parse_slo("event.p90<600ms")], m)
    assert p90.passed is True and 4.9 < p90.observed < 5.1


def test_nothing_measured_is_no_verdict() -> None:
    m = Metrics(0)
    m.declare("join")
    [res] = evaluate([parse_slo("join.p99<600ms")], m)
    assert res.passed is None


def test_rate_and_counts() -> None:
    m = Metrics(0)
    for _ in range(98):
        m.record("buy", 2 * MS, now_ns=0)
    m.error("buy", "internal", now_ns=0)
    m.timeout("buy", now_ns=0)
    rate, errs, slow = evaluate(
        [parse_slo("buy.failure_rate<1%"), parse_slo("buy.errors<=1"), parse_slo("buy.p50<1ms")], m
    )
    assert rate.observed == pytest.approx(2.0) and rate.passed is False
    assert errs.observed == 1 and errs.passed is True
    assert slow.passed is False
