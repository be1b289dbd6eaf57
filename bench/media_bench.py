"""Media relay benchmark: Souk against Janus, media workers, join bursts, leaks.

One command, everything on 127.0.0.1, the relay pinned to one core and every load process to
another (``--relay-core``, ``--load-core``):

    python bench/media_bench.py compare --steps 50,100,200,300,400 --window 8
    python bench/media_bench.py split --split-viewers 400 --workers 2
    python bench/media_bench.py burst --burst-viewers 50 --media-workers 2
    python bench/media_bench.py leak --cycles 500
    python bench/media_bench.py all            # the four, with their defaults

``compare`` (same run, one core): Souk (``souk serve --media-workers 0``: one process, the
relay in it, websocket signalling) and Janus 1.x (Debian's ``janus``, Streaming plugin,
``event_loops = 1``, fed plain RTP) serve the same kind of stream (a stamped, noisy 320x240
VP8 at 30 fps with Opus, encoded by aiortc at the bitrate Souk's publisher reached) to the same
non-decoding aiortc viewers, N at a time. For each N: each relay's CPU, every viewer's frame
ratio, and the per-viewer cost above that relay's own no-viewer baseline (Souk's ingest is
WebRTC, Janus's plain RTP: each is compared with itself). Janus will not gather an ICE
candidate on ``lo`` alone, so it runs in a network namespace with a stub interface holding
127.0.0.1/32 (a dummy, or a veth pair where the dummy module is missing; made and removed by
this script, which needs root for it).

``split``: the same viewers served by ``--media-workers 1`` (1 x N) and ``--media-workers 2``
(2 x N/2), every Souk process pinned to the one relay core: the workers' total CPU against the
single worker's, and the ingest process's own cost.

``burst``: ``--burst-viewers`` watches at once; the server's own delay from each ``watch`` to its
first keyframe packet sent (from ``/metrics``), the viewers' time to first frame beside it.

``leak``: watch/unwatch cycles; the server's tasks, fds, threads and RSS before and after.

Results: a table on stdout and JSON in ``--out`` (default ``reports/media_bench.json``).
Times and CPU on a shared machine are noisy: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402

FPS = 30
WIDTH, HEIGHT = 320, 240  # with noise: ~1.2-1.4 Mbit/s VP8
ROOM = "bench"
SECRET = "souk-demo-secret-change-me-not-for-production"  # what `souk serve --demo` signs with
LOSS_TOLERANCE = 0.97  # "zero loss": every viewer got >= 97 % of the frames sent in the window
JANUS_MOUNTPOINT = 1
JANUS_AUDIO_PORT, JANUS_VIDEO_PORT = 5002, 5004
JANUS_PLUGINS = "/usr/lib/x86_64-linux-gnu/janus/plugins"
JANUS_TRANSPORTS = "/usr/lib/x86_64-linux-gnu/janus/transports"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 1)


# ================================================================== child processes


async def json_lines(handle: Any) -> None:
    """Answer the controller's JSON commands on stdin with one JSON line each."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            print(json.dumps({"bye": True}), flush=True)
            return
        try:
            out = await handle(cmd)
        except Exception as exc:  # report, do not die: the controller decides
            out = {"error": repr(exc)}
        print(json.dumps(out), flush=True)


async def run_souk_publisher(url: str) -> None:
    """A WebRTC publisher (stamped noisy VP8 + Opus) on the server's websocket."""
    from client_sdk import Client
    from client_sdk.tokens import mint_token
    from media.testing import PublisherPeer, loopback

    with loopback():
        token = mint_token(SECRET, "streamer", name="bench", role="streamer", rooms=[ROOM])
        client = Client(url, token, reconnect=False)
        await client.connect()
        peer = PublisherPeer(fps=FPS, width=WIDTH, height=HEIGHT, noise=True)
        reply = await client.request("publish", room=ROOM, sdp=await peer.offer())
        await peer.accept(reply["sdp"])
        await peer.connected()
        print(json.dumps({"ready": True}), flush=True)

        async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
            sent = 0
            for report in (await peer.pc.getStats()).values():
                if getattr(report, "type", "") == "outbound-rtp" and report.kind == "video":
                    sent = report.bytesSent
            return {"frames": peer.video.frames_sent, "video_bytes": sent, "t": time.time(),
                    "state": peer.pc.connectionState}

        await json_lines(handle)
        await peer.close()
        await client.close()


async def run_janus_source(bitrate: int) -> None:
    """The same kind of stream as plain RTP to Janus's mountpoint: aiortc's VP8 encoder at a
    fixed bitrate (Janus sends the source no REMB), aiortc's packetization, Opus silence,
    a keyframe every 2 s (a plain-RTP source cannot be asked for one)."""
    import fractions

    from aiortc.codecs import get_encoder
    from aiortc.mediastreams import AudioStreamTrack
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtp import RtpPacket

    from media.testing import StampedVideoTrack

    video = StampedVideoTrack(fps=FPS, width=WIDTH, height=HEIGHT, noise=True)
    audio = AudioStreamTrack()
    vp8 = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    vp8.target_bitrate = bitrate  # type: ignore[attr-defined]
    opus = get_encoder(
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    )
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", JANUS_VIDEO_PORT)
    )
    audio_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", JANUS_AUDIO_PORT)
    )
    sent = {"bytes": 0}

    async def pump(track: Any, encoder: Any, pt: int, ssrc: int, out: Any, video_kind: bool) -> None:
        seq = 0
        frames = 0
        while True:
            frame = await track.recv()
            if frame.time_base is None:
                frame.time_base = fractions.Fraction(1, 48000)
            force = video_kind and frames % (2 * FPS) == 0
            payloads, timestamp = await loop.run_in_executor(None, encoder.encode, frame, force)
            frames += 1
            for i, payload in enumerate(payloads):
                packet = RtpPacket(payload_type=pt, sequence_number=seq & 0xFFFF,
                                   timestamp=timestamp & 0xFFFFFFFF, ssrc=ssrc)
                packet.payload = payload
                packet.marker = int(i == len(payloads) - 1)
                seq += 1
                data = packet.serialize()
                out.sendto(data)
                if video_kind:
                    sent["bytes"] += len(payload)

    tasks = [
        asyncio.ensure_future(pump(video, vp8, 96, 0x1234, transport, True)),
        asyncio.ensure_future(pump(audio, opus, 111, 0x5678, audio_transport, False)),
    ]
    print(json.dumps({"ready": True}), flush=True)

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"frames": video.frames_sent, "video_bytes": sent["bytes"], "t": time.time()}

    await json_lines(handle)
    for task in tasks:
        task.cancel()


async def run_sinks(relay: str, url: str, prefix: str) -> None:
    """Non-decoding aiortc viewers of Souk (websocket signalling) or Janus (HTTP API)."""
    from aiohttp import ClientSession

    from client_sdk import Client
    from client_sdk.tokens import mint_token
    from media.testing import loopback
    from media.testing.peers import RtpSinkViewer

    viewers: list[tuple[RtpSinkViewer, Any]] = []
    counter = 0
    with loopback():
        http = ClientSession()

        async def janus(path: str, body: dict[str, Any]) -> dict[str, Any]:
            body = {"transaction": os.urandom(6).hex(), **body}
            async with http.post(f"{url}{path}", json=body) as resp:
                reply: dict[str, Any] = await resp.json(content_type=None)
            if reply.get("janus") == "error":
                raise RuntimeError(f"janus: {reply}")
            return reply

        async def join_janus(peer: RtpSinkViewer) -> Any:
            for attempt in range(50):  # the first join waits for Janus to listen
                try:
                    session = (await janus("", {"janus": "create"}))["data"]["id"]
                    break
                except OSError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
            handle = (
                await janus(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"})
            )["data"]["id"]
            await janus(f"/{session}/{handle}",
                        {"janus": "message", "body": {"request": "watch", "id": JANUS_MOUNTPOINT}})
            offer = None
            deadline = time.time() + 15
            while offer is None and time.time() < deadline:
                async with http.get(f"{url}/{session}?maxev=1") as resp:
                    event = await resp.json(content_type=None)
                events = event if isinstance(event, list) else [event]
                for e in events:
                    if isinstance(e, dict) and "jsep" in e:
                        offer = e["jsep"]["sdp"]
            if offer is None:
                raise RuntimeError("janus sent no offer")
            answer = await peer.answer(offer)
            await janus(f"/{session}/{handle}", {"janus": "message", "body": {"request": "start"},
                                                 "jsep": {"type": "answer", "sdp": answer}})
            return (session, handle)

        async def join_souk(peer: RtpSinkViewer, vid: str) -> Any:
            token = mint_token(SECRET, vid, name=vid, role="viewer", rooms=[ROOM])
            client = Client(url, token, reconnect=False)
            await client.connect()
            reply = await client.request("watch", room=ROOM, sdp=await peer.offer())
            await peer.accept(reply["sdp"])
            return client

        async def leave(peer: RtpSinkViewer, signal: Any) -> None:
            await peer.close()
            if relay == "souk":
                await signal.close()
            else:
                with contextlib.suppress(Exception):
                    await janus(f"/{signal[0]}", {"janus": "destroy"})

        async def one(start_at: float) -> float | None:
            nonlocal counter
            delay = start_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            counter += 1
            peer = RtpSinkViewer()
            try:
                if relay == "souk":
                    signal = await join_souk(peer, f"{prefix}{counter}")
                else:
                    signal = await join_janus(peer)
            except Exception as exc:
                print(f"join failed: {exc!r}", file=sys.stderr, flush=True)
                await peer.close()
                return None
            viewers.append((peer, signal))
            deadline = time.time() + 20
            while peer.first_frame_at is None and time.time() < deadline:
                await asyncio.sleep(0.005)
            return None if peer.first_frame_at is None else (peer.first_frame_at - start_at) * 1000

        async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
            if cmd["cmd"] == "join":
                now = time.time() + 0.05
                rate = cmd.get("rate")
                starts = [now + (i / rate if rate else 0.0) for i in range(cmd["n"])]
                ttff = await asyncio.gather(*(one(s) for s in starts))
                return {"ttff_ms": [t for t in ttff if t is not None],
                        "failed": sum(t is None for t in ttff)}
            if cmd["cmd"] == "report":
                return {"t": time.time(), "frames": [p.video_frames for p, _ in viewers],
                        "cpu": sum(psutil.Process().cpu_times()[:2])}
            if cmd["cmd"] == "leave":
                for peer, signal in viewers:
                    await leave(peer, signal)
                viewers.clear()
                return {"left": True}
            if cmd["cmd"] == "cycles":
                nonlocal counter
                for _ in range(cmd["n"]):
                    counter += 1
                    peer = RtpSinkViewer()
                    client = await join_souk(peer, f"{prefix}c{counter}")
                    deadline = time.time() + 10
                    while peer.first_frame_at is None and time.time() < deadline:
                        await asyncio.sleep(0.005)
                    await client.request("unwatch", room=ROOM)
                    await leave(peer, client)
                return {"done": cmd["n"]}
            return {"error": f"unknown command {cmd['cmd']}"}

        print(json.dumps({"ready": True}), flush=True)
        await json_lines(handle)
        for peer, signal in viewers:
            await leave(peer, signal)
        await http.close()


# ================================================================== the controller's side


class Proc:
    """A child process of this script, spoken to by JSON lines."""

    log_dir: Path | None = None

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, role: str, *args: str, core: str, netns: str | None = None) -> Proc:
        cmd = ["taskset", "-c", str(core), sys.executable, __file__, role, *args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        stderr: Any = asyncio.subprocess.DEVNULL
        name = f"{role}-{args[-1] if args else ''}".replace("/", "_").replace(":", "_")
        if cls.log_dir is not None:
            stderr = open(cls.log_dir / f"{name}.err", "ab")  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            limit=2**24,
        )
        child = cls(proc, name)
        ready = json.loads(await child.line(120))
        if not ready.get("ready"):
            raise RuntimeError(f"{name} did not start: {ready}")
        return child

    async def line(self, limit_s: float = 300) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), limit_s)
        if not raw:
            raise RuntimeError(f"{self.name} died")
        return raw.decode().strip()

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        result: dict[str, Any] = json.loads(await self.line())
        if "error" in result:
            raise RuntimeError(f"{self.name}: {result['error']}")
        return result

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask(cmd="quit"), 30)
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def log_file(name: str) -> Any:
    """Where a server's output goes: ``--logs`` if given, else nowhere."""
    if Proc.log_dir is None:
        return subprocess.DEVNULL
    return open(Proc.log_dir / f"{name}.log", "ab")


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


class Relay:
    """One relay under test: its processes (for CPU) and how viewers reach it."""

    name = ""
    url = ""
    netns: str | None = None

    def pids(self) -> dict[str, int]:
        raise NotImplementedError


class Souk(Relay):
    def __init__(self, core: str, media_workers: int, data_dir: Path) -> None:
        self.name = f"souk(media-workers {media_workers})"
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.core = core
        self.media_workers = media_workers
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._popen()
        await asyncio.to_thread(wait_listening, self.port, self.proc, what="souk serve")

    def _popen(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["taskset", "-c", self.core, str(ROOT / ".venv/bin/souk"), "serve", "--demo",
             "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--media-workers", str(self.media_workers), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=log_file(f"souk-{self.port}"),
        )

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        out = {"ingest": self.proc.pid}
        with contextlib.suppress(psutil.Error):
            for i, child in enumerate(psutil.Process(self.proc.pid).children(recursive=True)):
                out[f"worker{i}"] = child.pid
        return out

    async def metrics(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data.decode(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Janus(Relay):
    """Janus in a network namespace of its own (see the module docstring)."""

    def __init__(self, core: str) -> None:
        self.name = "janus(event_loops 1)"
        self.core = core
        self.netns = f"soukbench{os.getpid()}"
        self.port = 8088
        self.url = f"http://127.0.0.1:{self.port}/janus"
        self.dir = Path(tempfile.mkdtemp(prefix="souk-janus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def _configure(self) -> None:
        (self.dir / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{self.dir}"
    plugins_folder = "{JANUS_PLUGINS}"
    transports_folder = "{JANUS_TRANSPORTS}"
    debug_level = 3
    event_loops = 1
    session_timeout = 0
}}
media: {{ rtp_port_range = "20000-40000" }}
nat: {{ nice_debug = false  ice_enforce_list = "souk0" }}
plugins: {{ disable = "libjanus_audiobridge.so,libjanus_echotest.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_nosip.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so,libjanus_lua.so,libjanus_duktape.so" }}
transports: {{ disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
""")
        (self.dir / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "compact" base_path = "/janus" http = true port = {self.port} https = false }}
admin: {{ admin_http = false }}
""")
        (self.dir / "janus.plugin.streaming.jcfg").write_text(f"""
general: {{ }}
souk-bench: {{
    type = "rtp"
    id = {JANUS_MOUNTPOINT}
    description = "souk media bench"
    media = (
        {{ type = "audio" mid = "a" port = {JANUS_AUDIO_PORT} pt = 111 codec = "opus" }},
        {{ type = "video" mid = "v" port = {JANUS_VIDEO_PORT} pt = 96 codec = "vp8" }}
    )
}}
""")

    async def start(self) -> None:
        self._popen()
        await asyncio.sleep(1.5)
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("janus did not start (see the logs)")

    def _popen(self) -> None:
        ns = self.netns
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # a dummy interface if the kernel has the module, else one end of a veth pair (both
        # ends stay inside the namespace): all Janus needs is an interface that is not lo
        if subprocess.run(["ip", "-n", ns, "link", "add", "souk0", "type", "dummy"],
                          stderr=subprocess.DEVNULL, check=False).returncode:
            subprocess.run(["ip", "-n", ns, "link", "add", "souk0", "type", "veth", "peer",
                            "name", "souk1"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "souk1", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "127.0.0.1/32", "dev", "souk0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "souk0", "up"], check=True)
        self._configure()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "taskset", "-c", self.core, "janus",
             "-F", str(self.dir), "-C", str(self.dir / "janus.jcfg")],
            stdout=log_file("janus"), stderr=subprocess.STDOUT,
        )

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        return {"janus": self.proc.pid}

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running(relay: Souk | Janus) -> AsyncIterator[None]:
    try:
        await relay.start()
        yield
    finally:
        await relay.stop()


async def measure(
    relay: Relay, source: Proc, sinks: list[Proc], window: float
) -> dict[str, Any]:
    """Relay CPU (per process) and every viewer's frame ratio over one window."""
    pids = relay.pids()
    profilers = profile(relay, pids, window)
    before = [await s.ask(cmd="report") for s in sinks]
    s0 = await source.ask(cmd="report")
    c0 = {name: cpu_s([pid]) for name, pid in pids.items()}
    w0 = time.time()
    await asyncio.sleep(window)
    c1 = {name: cpu_s([pid]) for name, pid in pids.items()}
    w1 = time.time()
    for p in profilers:
        await asyncio.to_thread(p.wait)
    s1 = await source.ask(cmd="report")
    after = [await s.ask(cmd="report") for s in sinks]
    elapsed = w1 - w0
    # frame rates, not counts: each process is asked at its own moment
    source_rate = max(s1["frames"] - s0["frames"], 1) / (s1["t"] - s0["t"])
    ratios = [
        (f1 - f0) / (a["t"] - b["t"]) / source_rate
        for b, a in zip(before, after, strict=True)
        for f0, f1 in zip(b["frames"], a["frames"], strict=False)
    ]
    per_process = {name: round(100 * (c1[name] - c0.get(name, c1[name])) / elapsed, 1)
                   for name in c1}
    return {
        "viewers": len(ratios),
        "relay_cpu_pct": round(sum(per_process.values()), 1),
        "per_process_cpu_pct": per_process,
        "min_frame_ratio": round(min(ratios), 3) if ratios else None,
        "source_fps": round((s1["frames"] - s0["frames"]) / (s1["t"] - s0["t"]), 1),
        "source_kbps": round(8 * (s1["video_bytes"] - s0["video_bytes"]) / (s1["t"] - s0["t"]) / 1000),
        "load_procs_cpu_pct": round(
            100 * sum(a["cpu"] - b["cpu"] for b, a in zip(before, after, strict=True)) / elapsed, 1
        ),
    }


PROFILE_DIR: Path | None = None  # --profile: py-spy each Souk process during each window


def profile(relay: Relay, pids: dict[str, int], window: float) -> list[Any]:
    """Sample every Souk process with py-spy (raw stacks, one file per process and window)."""
    if PROFILE_DIR is None or not isinstance(relay, Souk):
        return []
    spy = shutil.which("py-spy") or str(ROOT / ".venv/bin/py-spy")
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(max(int(window) - 1, 1)), "-r", "200",
             "-f", "raw", "--nonblocking", "-o",
             str(PROFILE_DIR / f"{relay.name.replace(' ', '')}-{name}-{int(time.time())}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def served(step: dict[str, Any]) -> bool:
    return (step["min_frame_ratio"] or 0) >= LOSS_TOLERANCE and step["source_fps"] >= 0.9 * FPS


async def ramp(
    relay: Souk | Janus, steps: list[int], window: float, load_core: str, bitrate: int
) -> dict[str, Any]:
    """Bring the source up, measure with no viewer, then with each number of viewers."""
    result: dict[str, Any] = {"relay": relay.name, "steps": []}
    async with running(relay):
        if isinstance(relay, Souk):
            source = await Proc.start("souk-publisher", relay.url, core=load_core)
        else:
            source = await Proc.start("janus-source", str(bitrate), core=load_core,
                                      netns=relay.netns)
        kind = "souk" if isinstance(relay, Souk) else "janus"
        sinks = [await Proc.start("sinks", kind, relay.url, f"s{i}-", core=load_core,
                                  netns=relay.netns) for i in range(2)]
        try:
            await asyncio.sleep(2)
            idle = await measure(relay, source, [], window)
            result["idle"] = idle
            print(f"  {relay.name}: no viewer: {idle}", flush=True)
            current = 0
            for target in steps:
                add = target - current
                if add > 0:
                    half = add // 2
                    for i, n in enumerate((add - half, half)):
                        if n:
                            joined = await sinks[i].ask(cmd="join", n=n, rate=25)
                            if joined["failed"]:
                                print(f"  {joined['failed']} joins failed", flush=True)
                    current = target
                    await asyncio.sleep(2)
                step = await measure(relay, source, sinks, window)
                step["served"] = served(step)
                result["steps"].append(step)
                print(f"  {relay.name}: {step}", flush=True)
        finally:
            for p in [*sinks, source]:
                await p.stop()
    return result


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (per-viewer cost, intercept) of CPU % against viewers."""
    n = len(points)
    if n < 2:
        return (points[0][1] / max(points[0][0], 1), 0.0) if points else (0.0, 0.0)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points) or 1
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return b, my - b * mx


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    idle = run["idle"]["relay_cpu_pct"]
    points = [(s["viewers"], s["relay_cpu_pct"]) for s in run["steps"] if s["viewers"]]
    per_viewer, intercept = slope(points)
    return {
        "no_viewer_cpu_pct": idle,
        "per_viewer_cpu_pct": round(per_viewer, 4),
        # what appears once viewers exist: CPU at N minus N x per-viewer minus the no-viewer
        # baseline, i.e. the fitted line's intercept above the baseline
        "fixed_cpu_pct": round(intercept - idle, 2),
        "above_baseline_per_viewer": {
            s["viewers"]: round((s["relay_cpu_pct"] - idle) / s["viewers"], 4)
            for s in run["steps"] if s["viewers"]
        },
        "all_served": all(s["served"] for s in run["steps"]),
    }


async def compare(args: argparse.Namespace, report: dict[str, Any]) -> None:
    steps = [int(x) for x in args.steps.split(",")]
    core = str(args.relay_core)
    print(f"compare: Souk vs Janus at {steps} viewers, relay on core {core}", flush=True)
    souk = await ramp(Souk(core, 0, Path(args.data) / "compare"), steps, args.window,
                      args.load_core, 0)
    kbps = [s["source_kbps"] for s in [souk["idle"], *souk["steps"]] if s["source_kbps"]]
    bitrate = int(sorted(kbps)[len(kbps) // 2] * 1000) if kbps else 1_200_000
    if os.geteuid() != 0 or shutil.which("janus") is None:
        print("  Janus skipped: it needs `janus` on PATH and root (a network namespace)")
        report["compare"] = {"souk": souk, "souk_summary": summarize(souk)}
        return
    janus = await ramp(Janus(core), steps, args.window, args.load_core, bitrate)
    s, j = summarize(souk), summarize(janus)
    ratios = {
        n: round(s["above_baseline_per_viewer"][n] / j["above_baseline_per_viewer"][n], 2)
        for n in s["above_baseline_per_viewer"]
        if j["above_baseline_per_viewer"].get(n)
    }
    report["compare"] = {"souk": souk, "janus": janus, "souk_summary": s, "janus_summary": j,
                         "per_viewer_ratio_souk_to_janus": ratios, "janus_bitrate": bitrate}
    print(f"  Souk : {s}\n  Janus: {j}\n  per-viewer cost above baseline, Souk/Janus: {ratios}",
          flush=True)


async def split(args: argparse.Namespace, report: dict[str, Any]) -> None:
    core = str(args.relay_core)
    out: dict[str, Any] = {}
    for workers in (1, args.workers):
        relay = Souk(core, workers, Path(args.data) / f"split{workers}")
        run = await ramp(relay, [args.split_viewers], args.window, args.load_core, 0)
        step = run["steps"][-1]
        procs = step["per_process_cpu_pct"]
        out[f"{workers}x{args.split_viewers // workers}"] = {
            "served": step["served"],
            "min_frame_ratio": step["min_frame_ratio"],
            "ingest_cpu_pct": procs.get("ingest"),
            "workers_cpu_pct": round(sum(v for k, v in procs.items() if k != "ingest"), 1),
            "per_process_cpu_pct": procs,
            "idle": run["idle"]["per_process_cpu_pct"],
        }
    single = out[f"1x{args.split_viewers}"]["workers_cpu_pct"]
    spread = out[f"{args.workers}x{args.split_viewers // args.workers}"]["workers_cpu_pct"]
    out["split_over_single"] = round(spread / single, 3) if single else None
    report["split"] = out
    print(f"split: {json.dumps(out, indent=1)}", flush=True)


def histogram(metrics: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one Prometheus histogram (le -> count)."""
    out: dict[float, float] = {}
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def histogram_pct(before: dict[float, float], after: dict[float, float], p: float) -> float | None:
    """The p-th percentile (ms) of what a histogram recorded between two scrapes, linearly
    interpolated inside its bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return None
    want = p / 100 * total
    low, prev = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= want:
            if bound == float("inf"):
                return round(low * 1000, 1)
            share = (want - prev) / max(count - prev, 1e-9)
            return round((low + share * (bound - low)) * 1000, 1)
        low, prev = bound, count
    return None


async def burst(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """``--burst-viewers`` watches at once, spread over ``--burst-procs`` viewer processes
    (one aiortc process doing fifty DTLS handshakes would itself be the bottleneck)."""
    relay = Souk(str(args.relay_core), args.media_workers, Path(args.data) / "burst")
    out: dict[str, Any] = {"viewers": args.burst_viewers, "media_workers": args.media_workers,
                           "relay_cores": str(args.relay_core), "runs": []}
    name = "souk_media_first_keyframe_seconds"
    procs = max(1, args.burst_procs)
    shares = [args.burst_viewers // procs + (i < args.burst_viewers % procs) for i in range(procs)]
    async with running(relay):
        source = await Proc.start("souk-publisher", relay.url, core=args.load_core)
        sinks = [await Proc.start("sinks", "souk", relay.url, f"b{i}-", core=args.load_core)
                 for i in range(procs)]
        try:
            await asyncio.sleep(2)
            for s in sinks:  # warm-up: first-use costs (imports, codecs) of both sides
                await s.ask(cmd="join", n=2)
                await s.ask(cmd="leave")
            await asyncio.sleep(2)
            for _ in range(args.rounds):
                h0 = histogram(await relay.metrics(), name)
                pids = list(relay.pids().values())
                c0 = cpu_s(pids)
                profilers = profile(relay, relay.pids(), 4)
                joined = await asyncio.gather(
                    *(s.ask(cmd="join", n=n) for s, n in zip(sinks, shares, strict=True) if n)
                )
                server_cpu = cpu_s(pids) - c0  # the joins, and the forwarding meanwhile
                await asyncio.sleep(2.5)  # the workers report their samples every second
                for p in profilers:
                    await asyncio.to_thread(p.wait)
                h1 = histogram(await relay.metrics(), name)
                ttff = [t for j in joined for t in j["ttff_ms"]]
                run = {
                    "server_watch_to_keyframe_p50_ms": histogram_pct(h0, h1, 50),
                    "server_watch_to_keyframe_p95_ms": histogram_pct(h0, h1, 95),
                    "server_samples": (h1.get(float("inf"), 0) - h0.get(float("inf"), 0)),
                    "client_ttff_p50_ms": pct(ttff, 50),
                    "client_ttff_p95_ms": pct(ttff, 95),
                    "failed": sum(j["failed"] for j in joined),
                    "server_cpu_ms_per_join": round(1000 * server_cpu / args.burst_viewers, 1),
                }
                out["runs"].append(run)
                print(f"burst of {args.burst_viewers}: {run}", flush=True)
                for s in sinks:
                    await s.ask(cmd="leave")
                await asyncio.sleep(3)
            rate = await sinks[0].ask(cmd="join", n=args.burst_viewers, rate=10)
            out["ttff_10_per_s"] = {"p50_ms": pct(rate["ttff_ms"], 50),
                                    "p95_ms": pct(rate["ttff_ms"], 95), "failed": rate["failed"]}
            print(f"10 joins/s: {out['ttff_10_per_s']}", flush=True)
        finally:
            for s in sinks:
                await s.stop()
            await source.stop()
    report["burst"] = out


async def leak(args: argparse.Namespace, report: dict[str, Any]) -> None:
    relay = Souk(str(args.relay_core), args.media_workers, Path(args.data) / "leak")
    async with running(relay):
        source = await Proc.start("souk-publisher", relay.url, core=args.load_core)
        sinks = await Proc.start("sinks", "souk", relay.url, "l-", core=args.load_core)
        try:
            def footprint() -> dict[str, int]:
                out = {}
                for name, pid in relay.pids().items():
                    p = psutil.Process(pid)
                    out[f"{name}_rss_kib"] = p.memory_info().rss // 1024
                    out[f"{name}_fds"] = p.num_fds()
                    out[f"{name}_threads"] = p.num_threads()
                return out

            await sinks.ask(cmd="cycles", n=20)  # warm-up
            await asyncio.sleep(1)
            before = footprint()
            t0 = time.time()
            await sinks.ask(cmd="cycles", n=args.cycles)
            elapsed = time.time() - t0
            await asyncio.sleep(1)
            after = footprint()
        finally:
            await sinks.stop()
            await source.stop()
    out = {"cycles": args.cycles, "seconds": round(elapsed, 1), "before": before, "after": after}
    report["leak"] = out
    print(f"leak: {out}", flush=True)


async def controller(args: argparse.Namespace) -> None:
    global PROFILE_DIR
    if args.logs:
        Proc.log_dir = Path(args.logs)
        Proc.log_dir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        PROFILE_DIR = Path(args.profile)
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "source": {"codec": "VP8+Opus", "fps": FPS, "size": f"{WIDTH}x{HEIGHT}", "noise": True},
    }
    data = Path(tempfile.mkdtemp(prefix="souk-media-bench-"))
    args.data = str(data)
    try:
        if args.mode in ("compare", "all"):
            await compare(args, report)
        if args.mode in ("split", "all"):
            await split(args, report)
        if args.mode in ("burst", "all"):
            await burst(args, report)
        if args.mode in ("leak", "all"):
            await leak(args, report)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    report["load_avg_at_end"] = os.getloadavg()
    write_report(Path(args.out), report)


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"full report: {out}")


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    roles = {
        "souk-publisher": lambda a: run_souk_publisher(a.url),
        "janus-source": lambda a: run_janus_source(a.bitrate),
        "sinks": lambda a: run_sinks(a.relay, a.url, a.prefix),
    }
    p = sub.add_parser("souk-publisher")
    p.add_argument("url")
    p = sub.add_parser("janus-source")
    p.add_argument("bitrate", type=int)
    p = sub.add_parser("sinks")
    p.add_argument("relay", choices=["souk", "janus"])
    p.add_argument("url")
    p.add_argument("prefix")
    for mode in ("compare", "split", "burst", "leak", "all"):
        m = sub.add_parser(mode)
        m.add_argument("--relay-core", default="0", help="taskset CPU list for the relay")
        m.add_argument("--load-core", default="1",
                       help="taskset CPU list for the publisher and the viewers")
        m.add_argument("--burst-procs", type=int, default=4,
                       help="burst: viewer processes sharing the joins")
        m.add_argument("--window", type=float, default=8.0, help="seconds per measurement")
        m.add_argument("--steps", default="50,100,200,300,400", help="compare: viewer counts")
        m.add_argument("--split-viewers", type=int, default=400, help="split: total viewers")
        m.add_argument("--burst-viewers", type=int, default=50, help="burst: joins at once")
        m.add_argument("--workers", type=int, default=2, help="split: media workers to compare")
        m.add_argument("--media-workers", type=int, default=2, help="burst/leak: media workers")
        m.add_argument("--rounds", type=int, default=3, help="burst: bursts to measure")
        m.add_argument("--cycles", type=int, default=500, help="leak: watch/unwatch cycles")
        m.add_argument("--out", default="reports/media_bench.json")
        m.add_argument("--logs", default="", help="directory for the children's stderr")
        m.add_argument("--profile", default="",
                       help="directory for py-spy profiles of the Souk processes, per window")
    args = parser.parse_args()
    import uvloop

    if args.mode in roles:
        uvloop.run(roles[args.mode](args))
        return
    uvloop.run(controller(args))


if __name__ == "__main__":
    main()
