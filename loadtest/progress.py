"""What the tester sees: a live rich display while the run goes, a summary table at the end."""

from __future__ import annotations

import asyncio
import math
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtest.metrics import Metrics
from loadtest.run import Result, RunContext
from loadtest.watchdog import LAG_METRIC


def _ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "∞"
    return f"{v:.1f}"


def metrics_table(metrics: Metrics, names: list[str], title: str) -> Table:
    t = Table(title=title)
    for col in ("metric", "count", "errors", "timeouts", "p50", "p90", "p99", "p99.9", "max", "p99 incl. fail"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name in names:
        s = metrics.summary(name)
        t.add_row(name, str(s.count), str(s.errors), str(s.timeouts),
                  *(_ms(s.percentiles_ms[p]) for p in (50.0, 90.0, 99.0, 99.9)), _ms(s.max_ms), _ms(s.p(99.0)))
    return t


def live_view(ctx: RunContext, started: float) -> Group:
    totals = {"planned": 0, "joined": 0, "failed": 0, "frames": 0}
    for pool in ctx.pools:
        for k, v in pool.totals().items():
            totals[k] += v
    lag = ctx.metrics.summary(LAG_METRIC)
    head = Text(
        f"{ctx.config.scenario} · {time.monotonic() - started:5.1f} s · {ctx.phase} · viewers "
        f"{totals['joined']}/{totals['planned']} (failed {totals['failed']}) · frames {totals['frames']} · "
        f"loop lag p99 {_ms(lag.percentiles_ms[99.0])} ms"
    )
    names = [n for n in ctx.metrics.names if n not in (LAG_METRIC, "sched_lag")]
    return Group(head, metrics_table(ctx.metrics, names, "coordinator (viewer crowds merge at the end)"))


class Progress:
    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled

    async def tick(self, ctx: RunContext) -> None:
        if not self.enabled:
            return
        started = time.monotonic()
        with Live(live_view(ctx, started), console=self.console, refresh_per_second=4, transient=True) as live:
            while True:
                await asyncio.sleep(0.5)
                live.update(live_view(ctx, started))


def print_summary(console: Console, result: Result) -> None:
    m = result.metrics
    console.print(metrics_table(m, m.names, f"{result.scenario.name}: latency (ms)"))
    if result.slo_results:
        t = Table(title="SLOs")
        t.add_column("SLO")
        t.add_column("observed", justify="right")
        t.add_column("result")
        for r in result.slo_results:
            res = {True: "[green]met[/]", False: "[red]missed[/]", None: "[yellow]not measured[/]"}[r.passed]
            t.add_row(r.slo.text, _ms(r.observed), res)
        console.print(t)
    if result.checks:
        t = Table(title="correctness checks")
        t.add_column("check")
        t.add_column("result")
        t.add_column("detail")
        for c in result.checks:
            t.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail)
        console.print(t)
    if m.counters:
        console.print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(m.counters.items())))
    for name, codes in m.errors.items():
        console.print(f"errors in {name}: " + ", ".join(f"{c}×{n}" for c, n in codes.items()))
    rss = result.server.get("generator_rss_mb") if result.server else None
    if rss:
        console.print("generator peak RSS: " + ", ".join(f"{k} {v} MiB" for k, v in rss.items()))
    cpu = result.server.get("cpu_pct_per_second") if result.server else None
    if cpu:
        console.print(f"server pid {result.server['pid']}: CPU mean {sum(cpu) / len(cpu):.0f}%, "
                      f"max {max(cpu):.0f}% of a core; RSS max {max(result.server['rss_mb']):.0f} MiB")
    for note in result.notes:
        console.print(f"note: {note}")
    color = {"pass": "green", "fail": "red"}.get(result.verdict.status, "yellow")
    console.print(f"[bold {color}]verdict: {result.verdict.status.upper()}[/] (exit {result.verdict.exit_code})")
    for reason in result.verdict.reasons:
        console.print(f"  · {reason}")
