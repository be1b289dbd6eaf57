"""The generator watches itself, so that its own overload is never blamed on the server.

Every latency a load generator measures includes its own event-loop delays. The watchdog
samples the loop's lag (how late a short timer fires) and this process's CPU. If the
generator was saturated (CPU near one full core, or loop lag large enough to matter against
the SLOs), the verdict is "inconclusive": the run proves nothing about the server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from loadtest.metrics import Metrics

LAG_METRIC = "loop_lag"
SCHED_METRIC = "sched_lag"


@dataclass(frozen=True)
class Limits:
    """When the generator counts as the bottleneck (defaults: generous, documented)."""

    lag_p99_ms: float = 50.0
    lag_max_ms: float = 250.0
    sched_p99_ms: float = 50.0
    cpu_pct: float = 90.0  # of one core, for this process
    cpu_busy_fraction: float = 0.25  # share of seconds above cpu_pct that makes it inconclusive


@dataclass
class Watchdog:
    metrics: Metrics
    interval_s: float = 0.05
    label: str = "main"
    cpu: list[float] = field(default_factory=list)
    rss_mb: float = 0.0  # peak resident memory of this process
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        proc = psutil.Process()
        proc.cpu_percent(None)
        next_cpu = time.monotonic() + 1.0
        while True:
            before = time.monotonic_ns()
            await asyncio.sleep(self.interval_s)
            lag = time.monotonic_ns() - before - int(self.interval_s * 1e9)
            self.metrics.record(LAG_METRIC, max(lag, 0))
            if time.monotonic() >= next_cpu:
                self.cpu.append(proc.cpu_percent(None))
                self.rss_mb = max(self.rss_mb, proc.memory_info().rss / 2**20)
                next_cpu += 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "cpu": self.cpu, "rss_mb": self.rss_mb}


@dataclass
class Health:
    """How the generator did.

    Latency is measured from scheduled times, so the generator's own delays can only make the
    server look slower, never faster. `sustained` problems (a saturated CPU, a large share of
    actions started late) also mean the planned load was not offered: nothing is proven
    either way. `transient` hiccups (one long loop stall) matter only for an SLO that was
    missed by no more than `max_delay_ms`: the generator alone could explain that miss.
    """

    sustained: list[str] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)
    max_delay_ms: float = 0.0

    @property
    def reasons(self) -> list[str]:
        return self.sustained + self.transient


def assess(metrics: Metrics, cpu_by_process: dict[str, list[float]], limits: Limits = Limits()) -> Health:
    """Judge the generator from its loop lag, its dispatch lateness and its CPU."""
    h = Health()
    lag = metrics.summary(LAG_METRIC)
    sched = metrics.summary(SCHED_METRIC)
    for s in (lag, sched):
        if s.count:
            h.max_delay_ms = max(h.max_delay_ms, s.max_ms)
    if lag.count:
        p90, p99 = lag.percentiles_ms[90.0], lag.percentiles_ms[99.0]
        if p90 > limits.lag_p99_ms:
            h.sustained.append(f"generator event-loop lag p90 {p90:.1f} ms > {limits.lag_p99_ms:.0f} ms")
        elif p99 > limits.lag_p99_ms:
            h.transient.append(f"generator event-loop lag p99 {p99:.1f} ms > {limits.lag_p99_ms:.0f} ms")
        if lag.max_ms > limits.lag_max_ms:
            h.transient.append(f"generator event-loop lag max {lag.max_ms:.1f} ms > {limits.lag_max_ms:.0f} ms")
    if sched.count:
        p90, p99 = sched.percentiles_ms[90.0], sched.percentiles_ms[99.0]
        if p90 > limits.sched_p99_ms:
            h.sustained.append(f"generator started >10% of actions late: p90 {p90:.1f} ms > {limits.sched_p99_ms:.0f} ms")
        elif p99 > limits.sched_p99_ms:
            h.transient.append(f"generator started actions late: p99 {p99:.1f} ms > {limits.sched_p99_ms:.0f} ms")
    crashes = metrics.counters.get("generator_crashes", 0)
    if crashes:
        h.sustained.append(f"{crashes} generator actions crashed (a load-test bug): see errors 'crash:*'")
    saturated = False
    for label, samples in cpu_by_process.items():
        if not samples:
            continue
        busy = sum(1 for c in samples if c >= limits.cpu_pct) / len(samples)
        if busy > limits.cpu_busy_fraction:
            saturated = True
            h.sustained.append(
                f"generator process {label} above {limits.cpu_pct:.0f}% CPU in {busy:.0%} of seconds"
            )
    if h.sustained and not saturated and not crashes:
        peak = max((max(c) for c in cpu_by_process.values() if c), default=0.0)
        h.sustained.append(
            f"no generator process was CPU-bound (peak {peak:.0f}% of a core): the host itself "
            "was oversubscribed (other processes, or the server on the same cores)"
        )
    return h


def local_server_pid(host: str, port: int) -> int | None:
    """The pid listening on host:port when the server runs on this host (else None).

    Lets the report give the server process's own CPU next to the latencies: a server at
    100 % of a core is the bottleneck (a fair fail); a server at 20 % with bad latencies
    points elsewhere.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return int(c.pid)
    except (psutil.Error, OSError):
        return None
    return None


def cpu_pressure_us() -> int | None:
    """Total µs some task waited for a CPU on this host (Linux PSI), None if unavailable."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class ServerWatch:
    """Samples the (local) server process's CPU once a second while the run goes."""

    pid: int
    cpu: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            procs = [proc, *proc.children(recursive=True)]
            for p in procs:
                p.cpu_percent(None)
            while True:
                await asyncio.sleep(1.0)
                self.cpu.append(sum(p.cpu_percent(None) for p in procs))
                self.rss_mb.append(sum(p.memory_info().rss for p in procs) / 2**20)
        except psutil.Error:
            return
