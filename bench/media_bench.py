"""Media relay benchmark: forwarder vs aiortc's transcoding relay, TTFF, added latency, leaks.

Run: ``python bench/media_bench.py [--quick]`` (never part of ``make test``). Everything stays on
127.0.0.1. Processes: one relay (measured: its own CPU only), one publisher (stamped, noisy
320x240 VP8 at 30 fps, ~1.2-1.4 Mbit/s), two processes of non-decoding RTP sink viewers (the load),
one process of decoding probe viewers (latency from the stamped pixels). Signalling is plain
HTTP on the relay process (``/publish``, ``/watch``, ``/unwatch``, ``/stats``).

Phases (one run):
1. direct: publisher -> decoding viewer, peer to peer, no relay: the latency baseline.
2. forwarder: 50 simultaneous joins (TTFF p50/p95), then 50 joins at 10/s open loop (TTFF
   from each join's scheduled time), probe latency at 100 viewers, then +50 viewers per step
   until a viewer loses frames or the relay saturates: relay CPU per viewer, max viewers.
3. transcode: the same ramp (1, 2, 4, ... viewers) on aiortc's MediaRelay, which decodes once
   and re-encodes per viewer.
4. leak: N watch/unwatch cycles against the forwarder; relay tasks, fds, threads, RSS.
Results: a table on stdout and JSON in reports/media_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from aiohttp import ClientSession, web

FPS = 30
WIDTH, HEIGHT = 320, 240  # with noise: ~1.2-1.4 Mbit/s VP8, 2-3 ms to encode a frame
WINDOW_S = 5.0
LOSS_TOLERANCE = 0.97  # a viewer "keeps the source rate" if it got >= 97 % of the frames
MAX_LAG_MS = 1000  # and the probe's pixel latency p95 stays under this (no backlog building)


def served(step: dict[str, Any]) -> bool:
    """A step counts as served at the source rate with no frame loss: every viewer got
    >= 97 % of the frames the publisher sent, the publisher itself ran at >= 90 % of its
    rate (a starved publisher is not a pass), and the relay was not building a backlog."""
    return (
        (step["min_frame_ratio"] or 0) >= LOSS_TOLERANCE
        and step["source_fps"] >= 0.9 * FPS
        and (step["latency_p95_ms"] is None or step["latency_p95_ms"] < MAX_LAG_MS)
    )


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# ================================================================== relay process


async def run_relay(mode: str, port: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay as AiortcRelay

    from media import MediaRelay, hooks
    from media.testing import loopback

    with loopback():
        relay = MediaRelay() if mode == "forward" else None
        tracks: dict[str, Any] = {}
        fanout = AiortcRelay()
        pcs: dict[str, RTCPeerConnection] = {}
        frames = {"in": 0}

        async def publish(request: web.Request) -> web.Response:
            body = await request.json()
            if relay is not None:
                reply = await relay.publish("bench", "pub", body["sdp"])
                return web.json_response({"sdp": reply["sdp"]})
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs["pub"] = pc

            @pc.on("track")
            def on_track(track: Any) -> None:
                tracks[track.kind] = track

            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
            for t in pc.getTransceivers():
                if t.kind == "video":
                    # count the publisher's frames (marker bits) the same way in both modes
                    def count(packet: Any, t: Any = t) -> None:
                        if packet.payload_type == hooks.negotiated_codecs(t)[0].payloadType:
                            frames["in"] += packet.marker

                    hooks.tap_rtp(t.receiver, count)
            await pc.setLocalDescription(await pc.createAnswer())
            return web.json_response({"sdp": pc.localDescription.sdp})

        async def watch(request: web.Request) -> web.Response:
            body = await request.json()
            if relay is not None:
                reply = await relay.watch("bench", body["id"], body["sdp"])
                return web.json_response({"sdp": reply["sdp"]})
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs[body["id"]] = pc
            for kind in ("audio", "video"):
                if kind in tracks:
                    pc.addTrack(fanout.subscribe(tracks[kind]))
            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            return web.json_response({"sdp": pc.localDescription.sdp})

        async def unwatch(request: web.Request) -> web.Response:
            body = await request.json()
            if relay is not None:
                await relay.unwatch("bench", body["id"])
            elif body["id"] in pcs:
                await pcs.pop(body["id"]).close()
            return web.json_response({})

        async def stats(request: web.Request) -> web.Response:
            out: dict[str, Any] = {"tasks": len(asyncio.all_tasks()), "mode": mode}
            if relay is not None:
                out.update(relay.stats())
                frames["in"] = out["frames_in_total"]
            out["frames_in"] = frames["in"]
            return web.json_response(out)

        app = web.Application()
        app.add_routes(
            [
                web.post("/publish", publish),
                web.post("/watch", watch),
                web.post("/unwatch", unwatch),
                web.get("/stats", stats),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        profile = os.environ.get("MEDIA_BENCH_PROFILE")  # "start_s,duration_s,path"
        if profile:
            import cProfile

            start_s, duration_s, path = profile.split(",")
            await asyncio.sleep(float(start_s))
            profiler = cProfile.Profile()
            profiler.enable()
            await asyncio.sleep(float(duration_s))
            profiler.disable()
            profiler.dump_stats(path)
        await asyncio.Future()


# ================================================================== publisher process


async def run_publisher(port: int, seconds: float) -> None:
    from media.testing import PublisherPeer, loopback

    with loopback():
        peer = PublisherPeer(fps=FPS, width=WIDTH, height=HEIGHT, noise=True)
        async with ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/publish", json={"sdp": await peer.offer()}
            ) as resp:
                await peer.accept((await resp.json())["sdp"])
        await peer.connected()
        print("ready", flush=True)
        end = time.time() + seconds
        while time.time() < end:
            await asyncio.sleep(2)
            print(
                f"publisher {peer.pc.connectionState} frames {peer.video.frames_sent}",
                file=sys.stderr,
                flush=True,
            )
        await peer.close()


# ================================================================== viewers process


async def run_viewers(port: int, kind: str, prefix: str) -> None:
    from media.testing import ViewerPeer, loopback
    from media.testing.peers import RtpSinkViewer

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    viewers: list[Any] = []
    counter = 0
    with loopback():
        async with ClientSession() as http:

            async def join(peer: Any, vid: str) -> None:
                async with http.post(
                    f"http://127.0.0.1:{port}/watch", json={"id": vid, "sdp": await peer.offer()}
                ) as resp:
                    await peer.accept((await resp.json())["sdp"])

            def first_frame(peer: Any) -> float | None:
                return peer.sink.first_frame_at if kind == "probe" else peer.first_frame_at

            def frames(peer: Any) -> int:
                return peer.sink.frames if kind == "probe" else peer.video_frames

            async def one(start_at: float) -> tuple[float | None, Any]:
                nonlocal counter
                delay = start_at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                counter += 1
                peer = ViewerPeer(read_every=1) if kind == "probe" else RtpSinkViewer()
                viewers.append(peer)
                try:
                    await join(peer, f"{prefix}{counter}")
                except Exception:
                    return None, peer
                deadline = time.time() + 15
                while first_frame(peer) is None and time.time() < deadline:
                    await asyncio.sleep(0.005)
                ff = first_frame(peer)
                return (None if ff is None else (ff - start_at) * 1000), peer

            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = json.loads(line)
                out: dict[str, Any] = {}
                if cmd["cmd"] == "join":
                    now = time.time() + 0.05
                    rate = cmd.get("rate")
                    starts = [now + (i / rate if rate else 0.0) for i in range(cmd["n"])]
                    results = await asyncio.gather(*(one(s) for s in starts))
                    ttff = [r[0] for r in results if r[0] is not None]
                    out = {"ttff_ms": ttff, "failed": sum(r[0] is None for r in results)}
                elif cmd["cmd"] == "report":
                    out = {"t": time.time(), "frames": [frames(p) for p in viewers]}
                    if kind == "probe":
                        out["latencies"] = [ms for p in viewers for ms in p.sink.latencies_ms]
                        for p in viewers:
                            p.sink.latencies_ms.clear()
                    out["cpu"] = sum(psutil.Process().cpu_times()[:2])
                elif cmd["cmd"] == "cycles":
                    for _ in range(cmd["n"]):
                        counter += 1
                        peer = RtpSinkViewer()
                        await join(peer, f"{prefix}c{counter}")
                        deadline = time.time() + 10
                        while peer.first_frame_at is None and time.time() < deadline:
                            await asyncio.sleep(0.005)
                        async with http.post(
                            f"http://127.0.0.1:{port}/unwatch", json={"id": f"{prefix}c{counter}"}
                        ):
                            pass
                        await peer.close()
                    out = {"done": cmd["n"]}
                elif cmd["cmd"] == "leave":
                    for p in viewers:
                        await p.close()
                    viewers.clear()
                    out = {"left": True}
                elif cmd["cmd"] == "quit":
                    break
                print(json.dumps(out), flush=True)
            for p in viewers:
                await p.close()


# ================================================================== direct baseline


async def run_direct(seconds: float) -> None:
    """Publisher -> decoding viewer, peer to peer, in one process: the latency baseline."""
    from media.testing import PublisherPeer, ViewerPeer, loopback

    with loopback():
        pub = PublisherPeer(fps=FPS, width=WIDTH, height=HEIGHT, noise=True)
        viewer = ViewerPeer()
        await pub.pc.setLocalDescription(await pub.pc.createOffer())
        await viewer.pc.setRemoteDescription(pub.pc.localDescription)
        for t in viewer.pc.getTransceivers():
            t.direction = "recvonly"
        await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
        await pub.pc.setRemoteDescription(viewer.pc.localDescription)
        await asyncio.sleep(2)
        viewer.sink.latencies_ms.clear()
        await asyncio.sleep(seconds)
        print(json.dumps({"latencies": viewer.sink.latencies_ms, "frames": viewer.sink.frames}))
        await viewer.close()
        await pub.close()


# ================================================================== controller


class Proc:
    """A child process of this script, spoken to by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    log_dir: Path | None = None

    @classmethod
    async def start(cls, *args: str) -> Proc:
        stderr: Any = asyncio.subprocess.DEVNULL
        if cls.log_dir is not None:
            name = "-".join(a.strip("-") for a in args[:3])
            stderr = open(cls.log_dir / f"{name}.err", "ab")  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        return cls(proc)

    async def line(self, limit_s: float = 120) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), limit_s)
        if not raw:
            raise RuntimeError("child process died")
        return raw.decode().strip()

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        result: dict[str, Any] = json.loads(await self.line(limit_s=300))
        return result

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()


async def relay_stats(port: int) -> dict[str, Any]:
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/stats") as resp:
        result: dict[str, Any] = await resp.json()
        return result


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def measure(
    relay: Proc, port: int, sinks: list[Proc], probe: Proc | None, window: float
) -> dict[str, Any]:
    """Relay CPU and every viewer's frame rate over one window."""
    pid = relay.proc.pid
    before = [await s.ask(cmd="report") for s in sinks]
    if probe:
        await probe.ask(cmd="report")
    c0, w0 = cpu_s(pid), time.time()
    s0 = await relay_stats(port)
    await asyncio.sleep(window)
    c1, w1 = cpu_s(pid), time.time()
    s1 = await relay_stats(port)
    after = [await s.ask(cmd="report") for s in sinks]
    lat = (await probe.ask(cmd="report"))["latencies"] if probe else []
    # frames every viewer got vs frames the publisher sent in the same window (the shared
    # machine may starve the publisher; that is not the relay's loss)
    source_frames = max(s1["frames_in"] - s0["frames_in"], 1)
    ratios = []
    for b, a in zip(before, after, strict=True):
        for f0, f1 in zip(b["frames"], a["frames"], strict=False):
            ratios.append((f1 - f0) / source_frames)
    viewer_cpu = sum(a["cpu"] - b["cpu"] for b, a in zip(before, after, strict=True)) / (w1 - w0)
    return {
        "viewers": len(ratios),
        "relay_viewers": s1.get("viewers"),  # what the relay itself counts
        "relay_packets_out_per_s": round(
            (s1.get("packets_out_total", 0) - s0.get("packets_out_total", 0)) / (w1 - w0)
        ),
        "relay_cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 1),
        "viewer_procs_cpu_pct": round(100 * viewer_cpu, 1),
        "min_frame_ratio": round(min(ratios), 3) if ratios else None,
        "source_fps": round((s1["frames_in"] - s0["frames_in"]) / (w1 - w0), 1),
        "latency_p50_ms": pct(lat, 50),
        "latency_p95_ms": pct(lat, 95),
    }


async def ramp(
    mode: str, port: int, steps: list[int], quick: bool, log: list[str]
) -> dict[str, Any]:
    relay = await Proc.start("relay", "--mode", mode, "--port", str(port))
    await relay.line()
    pub = await Proc.start("publisher", "--port", str(port), "--seconds", "3600")
    await pub.line()
    await asyncio.sleep(2)
    sinks = [
        await Proc.start("viewers", "--port", str(port), "--kind", "sink", "--prefix", f"s{i}-")
        for i in range(2)
    ]
    probe = await Proc.start("viewers", "--port", str(port), "--kind", "probe", "--prefix", "p-")
    result: dict[str, Any] = {"mode": mode, "steps": []}
    try:
        idle = await measure(relay, port, [], None, 3.0)
        result["idle_relay_cpu_pct"] = idle["relay_cpu_pct"]
        if mode == "forward":
            burst = await sinks[0].ask(cmd="join", n=50)
            result["ttff_burst50"] = {
                "p50_ms": pct(burst["ttff_ms"], 50),
                "p95_ms": pct(burst["ttff_ms"], 95),
                "failed": burst["failed"],
            }
            log.append(f"forward: TTFF burst of 50: {result['ttff_burst50']}")
            print(log[-1], flush=True)
            await sinks[0].ask(cmd="leave")
            await asyncio.sleep(3)
            rate = await sinks[1].ask(cmd="join", n=50, rate=10)
            result["ttff_rate10"] = {
                "p50_ms": pct(rate["ttff_ms"], 50),
                "p95_ms": pct(rate["ttff_ms"], 95),
                "failed": rate["failed"],
            }
            log.append(f"forward: TTFF 10 joins/s open loop: {result['ttff_rate10']}")
            print(log[-1], flush=True)
            await sinks[1].ask(cmd="leave")
            await asyncio.sleep(3)
            await probe.ask(cmd="join", n=3)
        else:
            await probe.ask(cmd="join", n=1)
        current = 0
        for target in steps:
            if target > current:
                add = target - current
                half = add // 2
                for i, n in enumerate((add - half, half)):
                    if n:
                        await sinks[i].ask(cmd="join", n=n, rate=25)
                current = target
                await asyncio.sleep(2)
            m = await measure(relay, port, sinks, probe, WINDOW_S)
            result["steps"].append(m)
            log.append(f"{mode}: {m}")
            print(log[-1], flush=True)
            if not served(m) or m["relay_cpu_pct"] > 95:
                break
            if quick and len(result["steps"]) >= 2:
                break
        for step in result["steps"]:
            step["cpu_pct_per_viewer"] = round(
                (step["relay_cpu_pct"] - result["idle_relay_cpu_pct"]) / max(step["viewers"], 1), 3
            )
        ok = [s for s in result["steps"] if served(s)]
        result["max_viewers_no_loss"] = max((s["viewers"] for s in ok), default=0)
        # CPU per viewer (above the idle intake) at the largest loss-free step; if no step
        # was loss-free, at the first step, flagged
        basis = max(ok, key=lambda s: s["viewers"]) if ok else result["steps"][0]
        result["cpu_pct_per_viewer"] = basis["cpu_pct_per_viewer"]
        result["cpu_per_viewer_at"] = {"viewers": basis["viewers"], "loss_free": bool(ok)}
    finally:
        for p in [*sinks, probe]:
            try:
                await asyncio.wait_for(p.ask(cmd="quit"), 30)
            except Exception:
                pass
            await p.stop()
        await pub.stop()
        await relay.stop()
    return result


async def leak(port: int, cycles: int, log: list[str]) -> dict[str, Any]:
    relay = await Proc.start("relay", "--mode", "forward", "--port", str(port))
    await relay.line()
    pub = await Proc.start("publisher", "--port", str(port), "--seconds", "3600")
    await pub.line()
    viewers = await Proc.start("viewers", "--port", str(port), "--kind", "sink", "--prefix", "l-")
    try:
        proc = psutil.Process(relay.proc.pid)
        await viewers.ask(cmd="cycles", n=20)  # warm-up
        await asyncio.sleep(1)
        s0 = await relay_stats(port)
        before = {
            "rss": proc.memory_info().rss,
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
        }
        t0 = time.time()
        await viewers.ask(cmd="cycles", n=cycles)
        elapsed = time.time() - t0
        await asyncio.sleep(1)
        s1 = await relay_stats(port)
        after = {
            "rss": proc.memory_info().rss,
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
        }
        out = {
            "cycles": cycles,
            "seconds": round(elapsed, 1),
            "tasks": [s0["tasks"], s1["tasks"]],
            "fds": [before["fds"], after["fds"]],
            "threads": [before["threads"], after["threads"]],
            "rss_growth_kib": round((after["rss"] - before["rss"]) / 1024),
            "viewers_left": s1["viewers"],
        }
        log.append(f"leak: {out}")
        print(log[-1], flush=True)
        return out
    finally:
        try:
            await asyncio.wait_for(viewers.ask(cmd="quit"), 30)
        except Exception:
            pass
        await viewers.stop()
        await pub.stop()
        await relay.stop()


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


async def controller(args: argparse.Namespace) -> None:
    log: list[str] = []
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "source": {"codec": "VP8", "fps": FPS, "size": f"{WIDTH}x{HEIGHT}", "noise": True},
    }
    if args.logs:
        Proc.log_dir = Path(args.logs)
        Proc.log_dir.mkdir(parents=True, exist_ok=True)
    direct = await Proc.start("direct", "--seconds", "5")
    d = json.loads(await direct.line(limit_s=60))
    await direct.stop()
    report["direct_latency_p50_ms"] = pct(d["latencies"], 50)
    print(f"direct (no relay) latency p50 {report['direct_latency_p50_ms']} ms", flush=True)

    fwd_steps = [25, 50, 75, 100, 150, 200, 300, 400, 500]
    report["forward"] = report["transcode"] = {"steps": []}
    if args.only in (None, "forward"):
        report["forward"] = await ramp("forward", args.port, fwd_steps, args.quick, log)
    if args.only in (None, "transcode"):
        report["transcode"] = await ramp(
            "transcode", args.port + 1, [1, 2, 4, 6, 8, 10, 12, 15, 20, 25], args.quick, log
        )
    if args.cycles:
        report["leak"] = await leak(args.port + 2, args.cycles, log)

    fwd, tx = report["forward"], report["transcode"]
    if fwd.get("cpu_pct_per_viewer") and tx.get("cpu_pct_per_viewer"):
        report["cpu_per_viewer_ratio"] = round(
            tx["cpu_pct_per_viewer"] / fwd["cpu_pct_per_viewer"], 1
        )
    lat = [s["latency_p50_ms"] for s in fwd["steps"] if s.get("latency_p50_ms") is not None]
    if lat and report["direct_latency_p50_ms"] is not None:
        report["relay_latency_p50_ms"] = lat[0]
        report["added_latency_p50_ms"] = lat[0] - report["direct_latency_p50_ms"]
    report["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    write_report(out, report)
    print(
        json.dumps({k: v for k, v in report.items() if k not in ("forward", "transcode")}, indent=2)
    )
    print(f"full report: {out}")


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    r = sub.add_parser("relay")
    r.add_argument("--mode", choices=["forward", "transcode"], default="forward")
    r.add_argument("--port", type=int, required=True)
    p = sub.add_parser("publisher")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=3600)
    v = sub.add_parser("viewers")
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--kind", choices=["sink", "probe"], default="sink")
    v.add_argument("--prefix", default="v")
    d = sub.add_parser("direct")
    d.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--port", type=int, default=18700)
    parser.add_argument("--quick", action="store_true", help="two steps per ramp (smoke run)")
    parser.add_argument("--cycles", type=int, default=500, help="watch/unwatch cycles (0: skip)")
    parser.add_argument("--out", default="reports/media_bench.json")
    parser.add_argument("--only", choices=["forward", "transcode"], default=None)
    parser.add_argument("--logs", default="", help="directory for the children's stderr")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.role == "relay":
        asyncio.run(run_relay(args.mode, args.port))
    elif args.role == "publisher":
        asyncio.run(run_publisher(args.port, args.seconds))
    elif args.role == "viewers":
        asyncio.run(run_viewers(args.port, args.kind, args.prefix))
    elif args.role == "direct":
        asyncio.run(run_direct(args.seconds))
    else:
        asyncio.run(controller(args))


if __name__ == "__main__":
    main()
