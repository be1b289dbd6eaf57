"""Small profiles of every scenario against a real server process on 127.0.0.1.

Each run goes through the real CLI entry (`loadtest.cli.main`) and asserts the mission's
600 ms bound from the written report.json. A scenario whose server ops have not landed yet is
reported as SKIPPED with the missing op named, never as passed; it runs as soon as they do.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from client_sdk.protocol import Code
from loadtest.cli import main
from loadtest.run import Config, RunContext, Scenario, ScenarioUnsupported, run
from loadtest.session import RequestError, Session
from tests.conftest import ROOT, SECRET, ServerProcess, token

BOUND_MS = 600.0

# the op each scenario needs beyond the core protocol (probed before running)
NEEDS: dict[str, tuple[str, dict[str, Any]]] = {
    "flashsale": ("product_create", {"title": "probe", "price": 100, "stock": 1}),
    "groupbuy": ("teambuy_create", {"room": "probe", "product": "none", "price": 1, "size": 2, "window_s": 1}),
    "mirror": ("group_create", {"tier": "normal", "topic": "probe"}),
    "media": ("publish", {"room": "probe", "sdp": "v=0"}),
    "draw": ("draws", {"room": "probe"}),
}


@pytest.fixture
def srv(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process("--demo")


def _missing_op(url: str, op: str, fields: dict[str, Any]) -> bool:
    async def probe() -> bool:
        s = await Session.open(url, token("probe-streamer", "streamer"))
        try:
            await s.request(op, **fields)
        except RequestError as exc:
            return exc.code == Code.UNKNOWN_OP
        finally:
            await s.close()
        return False

    return asyncio.run(probe())


def _run_once(srv: ServerProcess, scenario: str, report: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code = main([scenario, "--url", srv.url, "--secret", SECRET, "--profile", "small", "--no-live",
                 "--report", str(report), "--room", f"lt-{scenario}-{report.name}", *extra])
    data = orjson.loads((report / "report.json").read_bytes()) if (report / "report.json").exists() else {}
    return code, data


def _run(srv: ServerProcess, scenario: str, tmp_path: Path, *extra: str, attempts: int = 3) -> tuple[int, dict[str, Any]]:
    """Run through the CLI; re-run while the verdict is inconclusive with an SLO missed.

    Inconclusive means the generator itself stalled (its own loop lag, measured in its own
    process: a slow server cannot cause it), e.g. because other engineers' benchmarks saturate
    these shared 2 cores. Then nothing was proven, so the run is repeated; if the host stays
    saturated the test is skipped naming the reasons, never passed.
    """
    data: dict[str, Any] = {}
    for i in range(attempts):
        code, data = _run_once(srv, scenario, tmp_path / f"{scenario}{i}", *extra)
        missed = any(s["passed"] is False for s in data.get("slos", []))
        if code != 2 or not missed:
            return code, data
    pytest.fail(f"host too busy to measure {scenario} in {attempts} tries: {data['verdict']['reasons']}")


def _assert_verdict(code: int, data: dict[str, Any]) -> None:
    """Pass, or "inconclusive" only because the shared host was busy while every SLO was met.

    Other engineers' benchmarks share these 2 cores; the watchdog then (rightly) withholds a
    pass. The measured bound is still asserted by the caller from the report, so this test
    fails whenever the server misses it, whoever else is running.
    """
    v = data.get("verdict", {})
    if code == 2:
        assert all(s["passed"] for s in data["slos"]), v
        assert all(c["ok"] for c in data["checks"]), data["checks"]
        assert any("generator" in r for r in v["reasons"]), v
        return
    assert code == 0, v


def _assert_bound(data: dict[str, Any], metric: str) -> None:
    s = data["summary"][metric]
    assert s["count"] > 0, f"no {metric} samples"
    assert s["timeouts"] == 0 and s["errors"] == 0, f"{metric}: {s}"
    assert isinstance(s["p99_with_failures_ms"], float | int) and s["p99_with_failures_ms"] < BOUND_MS


@pytest.mark.parametrize("scenario", ["join", "events", "chat"])
def test_core_scenarios_meet_600ms(srv: ServerProcess, tmp_path: Path, scenario: str) -> None:
    code, data = _run(srv, scenario, tmp_path)
    _assert_verdict(code, data)
    _assert_bound(data, "join")
    if scenario != "join":
        _assert_bound(data, "event")
        assert data["counters"]["seq_gaps"] == 0
    assert all(c["ok"] for c in data["checks"])


def test_mixed_core_parts_meet_600ms(srv: ServerProcess, tmp_path: Path) -> None:
    """The compressed hour with every part the server has; the others switched off explicitly."""
    off = [("sale", "product_create"), ("teambuy", "teambuy_create"), ("questions", "ask"), ("media", "publish")]
    probes = {"product_create": NEEDS["flashsale"], "teambuy_create": NEEDS["groupbuy"],
              "publish": NEEDS["media"], "ask": ("ask", {"room": "probe", "text": "probe?"})}
    extra: list[str] = []
    for knob, op in off:
        if _missing_op(srv.url, *probes[op]):
            extra += ["--set", f"{knob}=0"]
    code, data = _run(srv, "mixed", tmp_path, *extra)
    _assert_verdict(code, data)
    _assert_bound(data, "join")
    _assert_bound(data, "event")


@pytest.mark.parametrize("scenario", sorted(NEEDS))
def test_feature_scenarios_meet_600ms(srv: ServerProcess, tmp_path: Path, scenario: str) -> None:
    op, fields = NEEDS[scenario]
    if _missing_op(srv.url, op, fields):
        pytest.fail(f"the server lacks `{op}`: scenario {scenario} not runnable end to end yet")
    # The media viewers decode in the generator's own process while the suite's other process
    # runs beside it on these 2 cores: first frames are asserted against a bound that such a
    # host keeps (a broken relay gives no frame at all); the 1 s goal is the benchmarks' job.
    extra = ("--slo", "first_frame.p95<3s", "--slo", "first_frame_rtp.p95<3s") if scenario == "media" else ()
    code, data = _run(srv, scenario, tmp_path, *extra)
    _assert_verdict(code, data)
    assert all(c["ok"] for c in data["checks"]), data["checks"]
    _assert_bound(data, "join")
    main_metric = {"flashsale": "buy", "groupbuy": "team", "mirror": "mirror", "media": "first_frame",
                   "draw": "enter"}[scenario]
    _assert_bound(data, main_metric)


def test_missed_slo_exits_1(srv: ServerProcess, tmp_path: Path) -> None:
    """The same healthy run against an impossible bound must fail, not pass."""
    code, data = _run(srv, "join", tmp_path, "--slo", "join.p50<0.001ms", "--viewers", "10")
    assert code == 1
    assert data["verdict"]["status"] == "fail"


def test_demo_tokens_when_no_secret(srv: ServerProcess, tmp_path: Path) -> None:
    code = main(["join", "--url", srv.url, "--no-live", "--viewers", "5", "--room", "demo",
                 "--report", str(tmp_path / "demo")])
    data = orjson.loads((tmp_path / "demo" / "report.json").read_bytes())
    assert code in (0, 2), data["verdict"]  # 2 only when the shared host stalled the generator
    assert data["summary"]["join"]["count"] == 5 and data["summary"]["join"]["errors"] == 0


class _NeedsAFutureOp(Scenario):
    """A scenario built for ops this server does not have (as when a feature has not landed)."""

    name = "future"
    metrics = ("join",)

    async def run(self, ctx: RunContext) -> None:
        s = await ctx.session("streamer", 0)
        await s.request("teleport", room=ctx.config.room)


def test_unknown_op_is_bad_configuration_not_a_fail(srv: ServerProcess) -> None:
    cfg = Config(scenario="future", url=srv.url, secret=SECRET, live=False)

    async def go() -> None:
        await run(cfg, _NeedsAFutureOp(), [])

    with pytest.raises(ScenarioUnsupported, match="teleport"):
        asyncio.run(go())


def test_workers_spread_the_crowd_and_merge(srv: ServerProcess, tmp_path: Path) -> None:
    """Two worker processes via the real console entry; their histograms merge into one report."""
    for attempt in range(3):
        report = tmp_path / f"workers{attempt}"
        out = subprocess.run(
            [sys.executable, "-m", "loadtest", "events", "--url", srv.url, "--secret", SECRET,
             "--workers", "2", "--viewers", "40", "--probes", "4", "--rate", "10", "--duration", "1",
             "--no-live", "--report", str(report), "--room", f"lt-workers{attempt}"],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )
        assert out.returncode in (0, 2), out.stdout[-3000:] + out.stderr[-3000:]
        data = orjson.loads((report / "report.json").read_bytes())
        if out.returncode == 0 or all(s["passed"] for s in data["slos"]):
            break
    else:
        pytest.fail(f"host too busy to measure the workers run: {data['verdict']['reasons']}")
    _assert_verdict(out.returncode, data)
    _assert_bound(data, "join")
    _assert_bound(data, "event")
    assert data["summary"]["join"]["count"] == 40
    assert data["summary"]["event"]["count"] == 4 * 10  # 4 probes x 10 events
    labels = set(data["generator"]["cpu_pct_per_second"])
    assert {"crowd0", "crowd1"} <= labels


def _accepted(srv: ServerProcess) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{srv.http}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("souk_accepted_connections_total "):
                return float(line.split()[1])
    raise AssertionError("no souk_accepted_connections_total on /metrics")


def test_events_across_a_two_node_cluster(server_process: Callable[..., ServerProcess],
                                          tmp_path: Path) -> None:
    """`--url` twice: the crowd is spread over both nodes of a real cluster (Redis bus), the
    streamer publishes on the first, so half the probes measure delivery across nodes; the
    run meets the 600 ms bound and every event reaches every probe, gap-free."""
    import uuid

    prefix = f"souk-lt-{uuid.uuid4().hex[:8]}:"
    a, b = (server_process("--redis", "redis://127.0.0.1:6379/0", "--redis-prefix", prefix,
                           data_dir=tmp_path / f"node{i}") for i in range(2))
    before = _accepted(a), _accepted(b)
    report = tmp_path / "cluster"
    code = main(["events", "--url", a.url, "--url", b.url, "--secret", SECRET, "--no-live",
                 "--viewers", "40", "--probes", "6", "--rate", "10", "--duration", "1",
                 "--report", str(report), "--room", "lt-cluster"])
    data = orjson.loads((report / "report.json").read_bytes())
    _assert_verdict(code, data)
    _assert_bound(data, "join")
    _assert_bound(data, "event")
    assert data["config"]["urls"] == [a.url, b.url]
    assert data["summary"]["event"]["count"] == 6 * 10  # every event to every probe
    assert data["counters"]["seq_gaps"] == 0
    on_a, on_b = _accepted(a) - before[0], _accepted(b) - before[1]
    assert on_a >= 20 and on_b >= 20, (on_a, on_b)  # 40 viewers round-robin (+ the streamer)
