"""Latency metrics that never flatter: HDR histograms, per-second series, counted failures.

Values are recorded in microseconds into HDR histograms (3 significant digits, 1 µs .. 1 h), so
percentiles are exact to 0.1 % and histograms from several worker processes merge losslessly.
A request that failed or an event that never arrived is not a missing sample: it is counted as
an error or a timeout, and the percentiles used for verdicts treat it as infinitely slow
(`Summary.p`), so losing 2 % of events cannot produce a good p99.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: nothing slower can be told apart from "never"
DIGITS = 3
SERIES_DIGITS = 2  # per-second histograms: coarser, they only draw the latency-over-time plot
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram(digits: int = DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def encode_histogram(h: HdrHistogram) -> str:
    """HDR's own compressed encoding (base64 text), readable by every HdrHistogram port."""
    raw: bytes = h.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def decode_histogram(text: str) -> HdrHistogram:
    h: HdrHistogram = HdrHistogram.decode(text.encode("ascii"))
    return h


def _clamp_us(latency_ns: int) -> int:
    return min(max(latency_ns // 1000, LOWEST_US), HIGHEST_US)


@dataclass
class Summary:
    """What a metric showed, in milliseconds; `p()` counts failures as infinitely slow."""

    name: str
    count: int
    errors: int
    timeouts: int
    min_ms: float
    mean_ms: float
    max_ms: float
    percentiles_ms: dict[float, float]  # over successful samples only (for display)
    histogram: HdrHistogram | None = field(default=None, repr=False)

    @property
    def failures(self) -> int:
        return self.errors + self.timeouts

    @property
    def attempts(self) -> int:
        return self.count + self.failures

    @property
    def failure_rate(self) -> float:
        """Failures as a percentage of attempts (0 when nothing was attempted)."""
        return 100.0 * self.failures / self.attempts if self.attempts else 0.0

    def p(self, percentile: float) -> float:
        """The percentile over every attempt, a failure ranking above any sample (inf ms)."""
        if self.attempts == 0:
            return math.nan
        rank = math.ceil(percentile / 100.0 * self.attempts)
        if rank > self.count:
            return math.inf
        if self.histogram is None or self.count == 0:
            return math.nan
        # the same rank among successful samples only
        inner = 100.0 * rank / self.count
        return float(self.histogram.get_value_at_percentile(min(inner, 100.0))) / 1000.0


class Metrics:
    """All measurements of one process; `merge` folds in another process's (exact for HDR).

    `t0_ns` is the run's origin on the monotonic clock, shared by every worker of one host
    (CLOCK_MONOTONIC is system-wide on Linux), so per-second series line up when merged.
    """

    def __init__(self, t0_ns: int | None = None) -> None:
        self.t0_ns = time.monotonic_ns() if t0_ns is None else t0_ns
        self.histograms: dict[str, HdrHistogram] = {}
        self.errors: dict[str, Counter[str]] = {}
        self.timeouts: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        # per metric, per second since t0: a coarse histogram of the samples recorded then
        self.series: dict[str, dict[int, HdrHistogram]] = {}
        self.failure_series: dict[str, Counter[int]] = {}

    # recording -------------------------------------------------------------------------
    def _second(self, now_ns: int | None) -> int:
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, (now - self.t0_ns) // 1_000_000_000)

    def declare(self, name: str) -> None:
        """Make a metric exist (with zero samples), so a silent failure still shows up."""
        self.histograms.setdefault(name, new_histogram())

    def record(self, name: str, latency_ns: int, now_ns: int | None = None) -> None:
        """One successful sample; latency must be measured from the scheduled time."""
        us = _clamp_us(latency_ns)
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = new_histogram()
        h.record_value(us)
        sec = self._second(now_ns)
        per = self.series.setdefault(name, {})
        sh = per.get(sec)
        if sh is None:
            sh = per[sec] = new_histogram(SERIES_DIGITS)
        sh.record_value(us)

    def error(self, name: str, reason: str = "error", now_ns: int | None = None) -> None:
        """An attempt that got a refusal or broke (counts against percentiles)."""
        self.declare(name)
        self.errors.setdefault(name, Counter())[reason] += 1
        self.failure_series.setdefault(name, Counter())[self._second(now_ns)] += 1

    def timeout(self, name: str, n: int = 1, now_ns: int | None = None) -> None:
        """Attempts (or expected events) that never got an answer in time."""
        if n <= 0:
            return
        self.declare(name)
        self.timeouts[name] += n
        self.failure_series.setdefault(name, Counter())[self._second(now_ns)] += n

    def count(self, name: str, n: int = 1) -> None:
        """A plain counter (frames received, seq gaps, units sold...)."""
        self.counters[name] += n

    # reading ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self.histograms)

    def summary(self, name: str) -> Summary:
        h = self.histograms.get(name) or new_histogram()
        n = int(h.get_total_count())
        pct = {p: (h.get_value_at_percentile(p) / 1000.0 if n else math.nan) for p in PERCENTILES}
        return Summary(
            name=name,
            count=n,
            errors=sum(self.errors.get(name, Counter()).values()),
            timeouts=self.timeouts.get(name, 0),
            min_ms=h.get_min_value() / 1000.0 if n else math.nan,
            mean_ms=h.get_mean_value() / 1000.0 if n else math.nan,
            max_ms=h.get_max_value() / 1000.0 if n else math.nan,
            percentiles_ms=pct,
            histogram=h,
        )

    def per_second(self, name: str) -> list[dict[str, float]]:
        """Latency over time: per second, count, failures, p50, p99 and max in ms."""
        per = self.series.get(name, {})
        fails = self.failure_series.get(name, Counter())
        out = []
        for sec in sorted(set(per) | set(fails)):
            h = per.get(sec)
            n = int(h.get_total_count()) if h is not None else 0
            out.append(
                {
                    "t": float(sec),
                    "count": float(n),
                    "failures": float(fails.get(sec, 0)),
                    "p50": h.get_value_at_percentile(50) / 1000.0 if h is not None and n else math.nan,
                    "p99": h.get_value_at_percentile(99) / 1000.0 if h is not None and n else math.nan,
                    "max": h.get_max_value() / 1000.0 if h is not None and n else math.nan,
                }
            )
        return out

    # merging and serialising -----------------------------------------------------------
    def merge(self, other: Metrics) -> None:
        """Fold another process's metrics in: histograms add exactly, counters sum."""
        for name, h in other.histograms.items():
            mine = self.histograms.get(name)
            if mine is None:
                mine = self.histograms[name] = new_histogram()
            mine.add(h)
        for name, c in other.errors.items():
            self.errors.setdefault(name, Counter()).update(c)
        self.timeouts.update(other.timeouts)
        self.counters.update(other.counters)
        shift = (other.t0_ns - self.t0_ns) // 1_000_000_000
        for name, per in other.series.items():
            mine_per = self.series.setdefault(name, {})
            for sec, h in per.items():
                at = max(0, sec + shift)
                target = mine_per.get(at)
                if target is None:
                    target = mine_per[at] = new_histogram(SERIES_DIGITS)
                target.add(h)
        for name, fails in other.failure_series.items():
            mine_f = self.failure_series.setdefault(name, Counter())
            for sec, n in fails.items():
                mine_f[max(0, sec + shift)] += n

    def to_dict(self) -> dict[str, Any]:
        """Everything, histograms HDR-encoded, so a report can be re-analysed later."""
        return {
            "t0_ns": self.t0_ns,
            "histograms": {k: encode_histogram(h) for k, h in self.histograms.items()},
            "errors": {k: dict(c) for k, c in self.errors.items()},
            "timeouts": dict(self.timeouts),
            "counters": dict(self.counters),
            "series": {
                k: {str(sec): encode_histogram(h) for sec, h in per.items()}
                for k, per in self.series.items()
            },
            "failure_series": {
                k: {str(sec): n for sec, n in c.items()} for k, c in self.failure_series.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        m = cls(int(data["t0_ns"]))
        m.histograms = {k: decode_histogram(v) for k, v in data["histograms"].items()}
        m.errors = {k: Counter({r: int(n) for r, n in c.items()}) for k, c in data["errors"].items()}
        m.timeouts = Counter({k: int(v) for k, v in data["timeouts"].items()})
        m.counters = Counter({k: int(v) for k, v in data["counters"].items()})
        m.series = {
            k: {int(sec): decode_histogram(v) for sec, v in per.items()}
            for k, per in data["series"].items()
        }
        m.failure_series = {
            k: Counter({int(sec): int(n) for sec, n in c.items()})
            for k, c in data["failure_series"].items()
        }
        return m

