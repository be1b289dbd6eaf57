"""One load-test run: its configuration, the context scenarios act through, and the result."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

from client_sdk.protocol import Code, Frame
from loadtest.credentials import TokenSource
from loadtest.crowd import CrowdSpec
from loadtest.metrics import Metrics
from loadtest.session import EventHandler, RequestError, Session
from loadtest.slo import Slo, SloResult, evaluate
from loadtest.verdict import Check, Verdict, decide
from loadtest.watchdog import (
    LAG_METRIC,
    SCHED_METRIC,
    Health,
    ServerWatch,
    Watchdog,
    assess,
    cpu_pressure_us,
)
from loadtest.workers import CrowdPool, split

GENERATOR_METRICS = (LAG_METRIC, SCHED_METRIC, "push")


class ScenarioUnsupported(Exception):
    """The server does not implement an op the scenario needs (exit 3: wrong test, not a fail)."""


@dataclass
class Config:
    """Everything a run needs; profile values fill what the command line left out."""

    scenario: str
    url: str  # the first node: actors (the streamer) connect here
    secret: str | None = None
    room: str = "demo"
    viewers: int = 20
    rate: float = 50.0
    duration_s: float = 2.0
    probes: int = 5
    workers: int = 1
    profile: str = "small"
    slos: list[str] = field(default_factory=list)
    report_dir: str | None = None
    clock: str = "mono"
    join_timeout_s: float = 10.0
    event_timeout_s: float = 5.0
    extra: dict[str, float] = field(default_factory=dict)  # scenario knobs from the profile
    live: bool = True  # show the rich live display
    server_pid: int | None = None  # a local server process whose CPU the report should show
    run_id: str = field(default_factory=lambda: "lt" + uuid.uuid4().hex[:8])
    # every node of a cluster under test (`--url` repeated); clients are spread over them
    # round-robin by index, so the streamer on the first node and viewers on the others
    # measure delivery across nodes. Empty: `url` alone.
    urls: list[str] = field(default_factory=list)

    def url_for(self, index: int) -> str:
        return self.urls[index % len(self.urls)] if self.urls else self.url


class Scenario:
    """A scenario drives actors in the coordinator and viewers through the crowd pool."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    profiles: ClassVar[dict[str, dict[str, float]]] = {}
    # SLOs asserted by default besides the mission's join/event p99 < 600 ms, so that the
    # scenario's own latency (and its lost deliveries, counted as infinitely slow) is judged
    default_slos: ClassVar[tuple[str, ...]] = ()

    async def run(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def slos_for(self, config: Config) -> tuple[str, ...]:
        """The default SLOs that apply to this configuration (a part switched off has none)."""
        return self.default_slos

    def actor_sockets(self, config: Config) -> int:
        """How many sockets the coordinator itself opens (for the open-file check)."""
        return 1


@dataclass(frozen=True)
class Expected:
    """An event a probe should receive: its stamp id and scheduled send time (monotonic)."""

    ident: int
    sent_ns: int


class RunContext:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.t0_ns = metrics.t0_ns
        self.tokens = TokenSource(config.url, config.room, config.secret, config.run_id)
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.pools: list[CrowdPool] = []
        self.sessions: list[Session] = []
        self.cpu: dict[str, list[float]] = {}
        self.rss_mb: dict[str, float] = {}
        self.last_seq: dict[str, int] = {}
        self.phase = "starting"

    def drain_s(self) -> float:
        """Grace after the last action for deliveries in flight (knob `drain_s`, default 1 s).

        An expected event not received by then is a timeout; one arriving later but before
        the crowd stops still counts, with its full latency.
        """
        return min(self.config.event_timeout_s, self.knob("drain_s", 1.0))

    def knob(self, name: str, default: float) -> float:
        return float(self.config.extra.get(name, default))

    def check(self, name: str, ok: bool, detail: str = "", *, hard: bool = True) -> None:
        self.checks.append(Check(name, ok, detail, hard))

    async def session(self, role: str, index: int, on_event: EventHandler | None = None) -> Session:
        token = (await self.tokens.tokens(role, 1, first=index))[0]
        s = await Session.open(self.config.url_for(index), token, on_event=on_event,
                               timeout_s=self.config.join_timeout_s)
        self.sessions.append(s)
        return s

    async def start_crowd(
        self,
        target: dict[str, str],
        viewers: int,
        probes: int,
        offsets: list[int],
        *,
        role: str = "viewer",
        first_index: int = 0,
        group_join: bool = False,
        label: str = "crowd",
        then: list[Frame] | None = None,
        join_metric: str = "join",
    ) -> CrowdPool:
        """Start `viewers` (of which `probes` decode fully), split over the worker processes;
        silent viewers send `then` after their join (its last reply timed as `join_metric`)."""
        cfg = self.config
        workers = max(1, cfg.workers)
        parts = min(workers, max(1, viewers))
        counts = split(viewers, parts)
        probe_counts = split(min(probes, viewers), parts)
        tokens: list[str] = []
        if cfg.secret is None:
            tokens = await self.tokens.tokens(role, viewers)
        specs = []
        taken = 0
        for i, (n, p) in enumerate(zip(counts, probe_counts, strict=True)):
            # worker i takes every parts-th arrival, so each sees the whole schedule's shape
            mine = offsets[i::parts][:n]
            specs.append(CrowdSpec(
                url=cfg.url, urls=list(cfg.urls), target=target, silent=n - p, probes=p, offsets=mine,
                start_ns=0, t0_ns=self.t0_ns, room=cfg.room, secret=cfg.secret,
                tokens=tokens[taken:taken + n], role=role, first_index=first_index + taken,
                run_id=cfg.run_id, clock=cfg.clock, join_timeout_s=cfg.join_timeout_s,
                label=f"{label}{i}", group_join=group_join, then=list(then or ()),
                join_metric=join_metric,
            ))
            taken += n
        pool = CrowdPool(workers if workers > 1 else 1)
        pool.start(specs)
        self.pools.append(pool)
        pool.started_ns = await pool.begin()
        return pool

    async def wait_joined(self, pool: CrowdPool, schedule_s: float) -> None:
        """Wait for the join schedule to play out; each join is bounded by its own timeout."""
        if not await pool.wait_joined(schedule_s + self.config.join_timeout_s * 2 + 5.0):
            self.notes.append("the crowd's join schedule did not finish in time; went on regardless")

    async def finish_crowd(self, pool: CrowdPool, expected: dict[str, list[Expected]]) -> None:
        """Stop the crowd, merge its metrics, and count every expected event that never came."""
        results = await pool.finish()
        for res in results:
            self.metrics.merge(Metrics.from_dict(res["metrics"]))
            self.cpu.update(res["cpu"])
            self.rss_mb.update(res.get("rss_mb", {}))
            for probe in res["probes"]:
                for kind, exp in expected.items():
                    got = set(probe["received"].get(kind, ()))
                    missing = sum(1 for e in exp if e.sent_ns >= probe["joined_ns"] and e.ident not in got)
                    self.metrics.timeout(kind, missing)
            for seq, n in res["last_seq"].items():
                self.last_seq[seq] = self.last_seq.get(seq, 0) + int(n)
        if self.last_seq:
            top = max(int(k) for k in self.last_seq)
            behind = sum(n for k, n in self.last_seq.items() if int(k) < top)
            self.metrics.count("viewers_behind", behind)

    async def close(self) -> None:
        for s in self.sessions:
            try:
                await asyncio.wait_for(s.close(), 2.0)
            except (TimeoutError, OSError):
                pass


@dataclass
class Result:
    config: Config
    scenario: Scenario
    metrics: Metrics
    slo_results: list[SloResult]
    checks: list[Check]
    generator: Health
    verdict: Verdict
    cpu: dict[str, list[float]]
    notes: list[str]
    started_at: float
    wall_s: float
    server: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from loadtest.report import result_dict

        return result_dict(self)


async def run(
    config: Config,
    scenario: Scenario,
    slos: list[Slo],
    on_tick: Callable[[RunContext], Coroutine[Any, Any, None]] | None = None,
) -> Result:
    """Run one scenario end to end and judge it."""
    metrics = Metrics()
    ctx = RunContext(config, metrics)
    started = time.time()
    watchdog = Watchdog(metrics, label=f"coordinator(pid {os.getpid()})")
    watchdog.start()
    psi_start, mono_start = cpu_pressure_us(), time.monotonic()
    server = ServerWatch(config.server_pid) if config.server_pid else None
    if server is not None:
        server.start()
    ticker = asyncio.create_task(on_tick(ctx)) if on_tick is not None else None
    try:
        for name in scenario.metrics:
            metrics.declare(name)
        try:
            await scenario.run(ctx)
        except RequestError as exc:
            if exc.code == Code.UNKNOWN_OP:
                raise ScenarioUnsupported(
                    f"the server does not implement what scenario {scenario.name!r} needs: {exc.message}"
                ) from exc
            ctx.check("scenario setup accepted by the server", False, f"{exc.code}: {exc.message}")
        finally:
            for pool in ctx.pools:
                if not pool.finished:
                    await pool.finish()
    finally:
        if ticker is not None:
            ticker.cancel()
        await watchdog.stop()
        if server is not None:
            await server.stop()
        await ctx.close()
    ctx.cpu[watchdog.label] = watchdog.cpu
    ctx.rss_mb[watchdog.label] = round(watchdog.rss_mb, 1)
    psi_end = cpu_pressure_us()
    if psi_start is not None and psi_end is not None:
        share = (psi_end - psi_start) / 1e6 / max(time.monotonic() - mono_start, 1e-3)
        ctx.notes.append(f"host CPU pressure during the run: some task waited for a CPU {share:.0%} "
                         "of the time (Linux PSI; includes the server and anything else on the host)")
    server_info: dict[str, Any] = {}
    if server is not None:
        server_info = {"pid": server.pid, "cpu_pct_per_second": server.cpu, "rss_mb": server.rss_mb}
    server_info["generator_rss_mb"] = ctx.rss_mb
    generator = assess(metrics, ctx.cpu)
    results = evaluate(slos, metrics)
    verdict = decide(results, ctx.checks, generator)
    return Result(config, scenario, metrics, results, ctx.checks, generator, verdict, ctx.cpu,
                  ctx.notes, started, time.time() - started, server_info)
