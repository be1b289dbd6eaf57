"""report.json round-trips (histograms included); report.html is one valid file with SVG."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from loadtest.metrics import Metrics
from loadtest.report import load_report, write_report
from loadtest.run import Config, Result
from loadtest.scenarios import SCENARIOS
from loadtest.slo import evaluate, parse_slo
from loadtest.verdict import Check, decide
from loadtest.watchdog import Health

MS = 1_000_000
S = 1_000_000_000


class _Strict(HTMLParser):
    """Checks balanced tags and collects what a self-contained report must (not) have."""

    VOID: ClassVar[set[str]] = {"meta", "br", "img", "hr", "input", "link"}
    SVG_VOID: ClassVar[set[str]] = {"line", "rect", "polyline", "path", "circle"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs = 0
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#"):
                self.external.append(v)
        if tag not in self.VOID and tag not in self.SVG_VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SVG_VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()


def _result() -> Result:
    m = Metrics(0)
    for sec in range(4):
        for v in (3, 5, 8, 40):
            m.record("join", v * MS, now_ns=sec * S)
            m.record("event", (v + 1) * MS, now_ns=sec * S)
    m.timeout("event", 1, now_ns=2 * S)
    m.error("event", "rate_limited", now_ns=S)
    m.count("frames", 123)
    slos = [parse_slo("join.p99<600ms"), parse_slo("event.p50<600ms")]
    results = evaluate(slos, m)
    checks = [Check("exactly M units sold", True, "sold 10 of 10")]
    cfg = Config(scenario="events", url="ws://127.0.0.1:1/ws", secret="s3cret<&>")
    return Result(cfg, SCENARIOS["events"](), m, results, checks, Health(), decide(results, checks),
                  {"coordinator": [12.0, 30.0]}, ["a note <with> markup"], time.time(), 4.2)


def test_json_round_trip(tmp_path: Path) -> None:
    result = _result()
    json_path, _ = write_report(result, tmp_path / "r")
    data, metrics = load_report(json_path)
    assert data["verdict"]["status"] == "pass" and data["verdict"]["exit_code"] == 0
    assert data["config"]["secret"] == "***"  # never written to disk
    assert data["summary"]["event"]["timeouts"] == 1
    assert data["summary"]["event"]["p99_with_failures_ms"] == "inf"
    assert data["errors_by_code"]["event"] == {"rate_limited": 1}
    assert data["counters"]["frames"] == 123
    # the histograms come back whole: every percentile equals the original's
    for name in ("join", "event"):
        assert metrics.summary(name).percentiles_ms == result.metrics.summary(name).percentiles_ms
        assert metrics.per_second(name) == result.metrics.per_second(name)


def test_html_is_self_contained_with_svg(tmp_path: Path) -> None:
    _, html_path = write_report(_result(), tmp_path)
    text = html_path.read_text(encoding="utf-8")
    parser = _Strict()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    assert parser.svgs >= 4  # latency over time + percentiles, for join and event
    assert parser.external == [] and parser.scripts == 0  # no CDN, no JS
    assert "PASS" in text
    assert "a note &lt;with&gt; markup" in text  # escaped
    assert "s3cret" not in text
