"""`souk-loadtest SCENARIO --url ws://HOST:PORT/ws [...]`: run a scenario, judge it, report it.

Exit codes: 0 pass, 1 SLO missed (or a correctness check failed), 2 inconclusive (the
generator was the bottleneck, or an SLO had nothing to measure), 3 bad configuration
(unknown scenario, metric or stat, bad URL, unreachable server, no way to get tokens, a
crowd that does not fit the open-file limit). See docs/loadtest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

from rich.console import Console

from loadtest.credentials import TokenError
from loadtest.run import GENERATOR_METRICS, Config, Result, Scenario, ScenarioUnsupported, run
from loadtest.scenarios import SCENARIOS
from loadtest.slo import Slo, SloError, default_slos, parse_slo, parse_slos
from loadtest.stamps import CLOCKS
from loadtest.verdict import BAD_CONFIG
from loadtest.watchdog import local_server_pid
from loadtest.workers import CapacityError, check_capacity, quiet_gc

PROFILES = ("small", "full")


class ConfigError(Exception):
    """Anything that makes the requested run impossible before it starts (exit 3)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(BAD_CONFIG, f"{self.prog}: bad configuration: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="souk-loadtest",
        description="Load-test a Souk server with open-loop arrivals, HDR latencies and SLO verdicts.",
        epilog="scenarios: " + ", ".join(f"{n} ({s.summary})" for n, s in SCENARIOS.items()),
    )
    p.add_argument("scenario", help="one of: " + ", ".join(SCENARIOS))
    p.add_argument("--url", action="append", default=None,
                   help="the server's websocket URL; repeat it for every node of a cluster: "
                        "clients are spread over the nodes round-robin, actors (the streamer) "
                        "use the first (default $SOUK_URL or ws://127.0.0.1:8080/ws)")
    p.add_argument("--secret", default=os.environ.get("SOUK_SECRET"),
                   help="the server's token secret (else: SOUK_SECRET, else demo tokens over HTTP)")
    p.add_argument("--room", default="demo")
    p.add_argument("--viewers", type=int, help="viewers in the room (crowd)")
    p.add_argument("--rate", type=float, help="arrivals or events per second (scenario-specific)")
    p.add_argument("--duration", type=float, help="seconds of steady load")
    p.add_argument("--probes", type=int, help="fully decoding viewers among --viewers")
    p.add_argument("--slo", action="append", default=[], metavar="EXPR",
                   help="e.g. 'join.p99<600ms', 'event.p99.9<1s', 'buy.failure_rate<1%%' (repeatable)")
    p.add_argument("--report", metavar="DIR", help="write DIR/report.json and DIR/report.html")
    p.add_argument("--workers", type=int, help="processes for the viewer crowd (default 1)")
    p.add_argument("--profile", choices=PROFILES, default="small")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="scenario knob, e.g. --set buyers=5000 --set units=100")
    p.add_argument("--clock", choices=CLOCKS, default="mono",
                   help="stamping clock: mono (one host) or wall (NTP-synced hosts)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before a reply or event counts as lost")
    p.add_argument("--join-timeout", type=float, default=10.0)
    p.add_argument("--no-live", action="store_true", help="no live display (CI logs)")
    p.add_argument("--server-pid", type=int,
                   help="server process to sample CPU/memory from (found by port when local)")
    return p


def _knobs(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--set expects KNOB=NUMBER, got {item!r}")
        try:
            out[key] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--set {key}: {value!r} is not a number") from exc
    return out


def check_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"bad --url {url!r}: expected ws://HOST:PORT/ws")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError as exc:
        raise ConfigError(f"bad port in --url {url!r}") from exc
    return parts.hostname, port


async def check_reachable(host: str, port: int, timeout_s: float = 3.0) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"server unreachable at {host}:{port}: {exc}") from exc
    writer.close()


def make_config(args: argparse.Namespace) -> tuple[Config, Scenario, list[Slo]]:
    """Resolve the scenario, profile defaults and SLOs; raise ConfigError on anything wrong."""
    cls = SCENARIOS.get(args.scenario)
    if cls is None:
        raise ConfigError(f"unknown scenario {args.scenario!r}; choose one of {', '.join(SCENARIOS)}")
    scenario = cls()
    urls = list(args.url or [os.environ.get("SOUK_URL", "ws://127.0.0.1:8080/ws")])
    for url in urls:
        check_url(url)
    profile = dict(scenario.profiles.get(args.profile, {}))
    extra = {k: v for k, v in profile.items()
             if k not in ("viewers", "rate", "duration_s", "probes", "workers")}
    extra.update(_knobs(args.set))

    def pick(flag: float | int | None, key: str, default: float) -> float:
        return float(flag) if flag is not None else float(profile.get(key, default))

    cfg = Config(
        scenario=scenario.name, url=urls[0], urls=urls if len(urls) > 1 else [], secret=args.secret or None, room=args.room,
        viewers=int(pick(args.viewers, "viewers", 20)), rate=pick(args.rate, "rate", 50.0),
        duration_s=pick(args.duration, "duration_s", 2.0), probes=int(pick(args.probes, "probes", 5)),
        workers=int(pick(args.workers, "workers", 1)), profile=args.profile, slos=list(args.slo),
        report_dir=args.report, clock=args.clock, join_timeout_s=args.join_timeout,
        event_timeout_s=args.timeout, extra=extra, live=not args.no_live, server_pid=args.server_pid,
    )
    if cfg.viewers < 0 or cfg.probes < 0 or cfg.rate <= 0 or cfg.duration_s < 0 or cfg.workers < 1:
        raise ConfigError("viewers/probes must be >= 0, rate > 0, duration >= 0, workers >= 1")
    if cfg.probes > cfg.viewers:
        cfg.probes = cfg.viewers
    known = list(scenario.metrics) + list(GENERATOR_METRICS)
    try:
        user = parse_slos(cfg.slos, known)
    except SloError as exc:
        raise ConfigError(str(exc)) from exc
    constrained = {(s.metric, s.stat) for s in user}
    defaults = default_slos(scenario.metrics) + [parse_slo(t, known) for t in scenario.slos_for(cfg)]
    slos = user + [d for d in defaults if (d.metric, d.stat) not in constrained]
    try:
        check_capacity(cfg.viewers, cfg.workers, scenario.actor_sockets(cfg))
    except CapacityError as exc:
        raise ConfigError(str(exc)) from exc
    return cfg, scenario, slos


async def execute(cfg: Config, scenario: Scenario, slos: list[Slo], console: Console) -> Result:
    from loadtest.progress import Progress

    for url in cfg.urls or [cfg.url]:
        await check_reachable(*check_url(url))
    host, port = check_url(cfg.url)
    if cfg.server_pid is None:
        cfg.server_pid = local_server_pid(host, port)
    progress = Progress(console, cfg.live and console.is_terminal)
    return await run(cfg, scenario, slos, on_tick=progress.tick)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        cfg, scenario, slos = make_config(args)
    except ConfigError as exc:
        console.print(f"[red]bad configuration:[/] {exc}")
        return BAD_CONFIG
    try:
        import uvloop

        quiet_gc()
        result = uvloop.run(execute(cfg, scenario, slos, console))
    except ConfigError as exc:
        console.print(f"[red]bad configuration:[/] {exc}")
        return BAD_CONFIG
    except (TokenError, ScenarioUnsupported) as exc:
        console.print(f"[red]bad configuration:[/] {exc}")
        return BAD_CONFIG
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: inconclusive[/]")
        return 2
    from loadtest.progress import print_summary

    print_summary(console, result)
    if cfg.report_dir:
        from loadtest.report import write_report

        j, h = write_report(result, cfg.report_dir)
        console.print(f"report: {j} and {h}")
    return result.verdict.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
