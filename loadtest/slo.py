"""Service-level objectives: `metric.stat<value(ms|s|%)`, checked against what was measured.

An SLO on a metric the scenario does not produce is a configuration error (exit 3), never a
silent pass. Latency percentiles count failed attempts and events that never arrived as
infinitely slow, and an SLO with nothing measured is inconclusive, never passed.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from loadtest.metrics import Metrics, Summary

DEFAULT_SLOS = ("join.p99<600ms", "event.p99<600ms")

LATENCY_STATS = ("min", "mean", "max")  # plus pNN(.N)
COUNT_STATS = ("count", "errors", "timeouts", "failures")
RATE_STATS = ("failure_rate",)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z][a-z0-9_]*)\.(?P<stat>p\d{1,2}(?:\.\d+)?|p100|[a-z_]+)\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|%)?\s*$"
)


class SloError(ValueError):
    """A malformed SLO expression or one naming a metric or stat that does not exist."""


@dataclass(frozen=True)
class Slo:
    metric: str
    stat: str
    op: str
    threshold: float  # ms for latency stats, % for rates, a plain number for counts
    text: str

    def observe(self, s: Summary) -> float:
        """The observed value of this SLO's stat (ms, %, or a count)."""
        if self.stat.startswith("p"):
            return s.p(float(self.stat[1:]))
        if self.stat == "min":
            return s.min_ms
        if self.stat == "mean":
            return s.mean_ms
        if self.stat == "max":
            # a failure is slower than anything measured
            return math.inf if s.failures else s.max_ms
        if self.stat == "count":
            return float(s.count)
        if self.stat == "errors":
            return float(s.errors)
        if self.stat == "timeouts":
            return float(s.timeouts)
        if self.stat == "failures":
            return float(s.failures)
        return s.failure_rate


def parse_slo(text: str, known_metrics: Iterable[str] | None = None) -> Slo:
    """Parse one expression; raise SloError on bad syntax, unknown stat or unknown metric."""
    m = _EXPR.match(text)
    if m is None:
        raise SloError(f"bad SLO {text!r}: expected metric.stat<value(ms|s|%), e.g. join.p99<600ms")
    metric, stat, op = m["metric"], m["stat"], m["op"]
    value, unit = float(m["value"]), m["unit"]
    known = None if known_metrics is None else set(known_metrics)
    if known is not None and metric not in known:
        raise SloError(f"unknown metric {metric!r} in {text!r}; this scenario measures: {', '.join(sorted(known))}")
    if stat.startswith("p"):
        pct = float(stat[1:])
        if not 0.0 < pct <= 100.0:
            raise SloError(f"percentile out of range in {text!r}")
        kind = "latency"
    elif stat in LATENCY_STATS:
        kind = "latency"
    elif stat in COUNT_STATS:
        kind = "count"
    elif stat in RATE_STATS:
        kind = "rate"
    else:
        raise SloError(f"unknown stat {stat!r} in {text!r}")
    if kind == "latency":
        if unit not in ("ms", "s"):
            raise SloError(f"{text!r}: a latency needs a unit, ms or s")
        threshold = value * 1000.0 if unit == "s" else value
    elif kind == "rate":
        if unit != "%":
            raise SloError(f"{text!r}: a rate is given in %")
        threshold = value
    else:
        if unit is not None:
            raise SloError(f"{text!r}: a count takes no unit")
        threshold = value
    return Slo(metric, stat, op, threshold, text.strip())


def parse_slos(texts: Sequence[str], known_metrics: Iterable[str]) -> list[Slo]:
    known = list(known_metrics)
    return [parse_slo(t, known) for t in texts]


def default_slos(known_metrics: Iterable[str]) -> list[Slo]:
    """The mission's 600 ms bound on join and event p99, for the metrics the scenario has."""
    known = set(known_metrics)
    return [parse_slo(t) for t in DEFAULT_SLOS if t.split(".", 1)[0] in known]


@dataclass(frozen=True)
class SloResult:
    slo: Slo
    observed: float
    passed: bool | None  # None: nothing measured, so no verdict

    def as_dict(self) -> dict[str, object]:
        return {
            "slo": self.slo.text,
            "metric": self.slo.metric,
            "stat": self.slo.stat,
            "threshold": self.slo.threshold,
            "observed": None if math.isnan(self.observed) else (
                "inf" if math.isinf(self.observed) else self.observed
            ),
            "passed": self.passed,
        }


def evaluate(slos: Iterable[Slo], metrics: Metrics) -> list[SloResult]:
    out = []
    for slo in slos:
        s = metrics.summary(slo.metric)
        observed = slo.observe(s)
        if s.attempts == 0 or math.isnan(observed):
            out.append(SloResult(slo, observed, None))
        else:
            out.append(SloResult(slo, observed, _OPS[slo.op](observed, slo.threshold)))
    return out
