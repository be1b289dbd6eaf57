"""`media`: K aiortc WebRTC viewers `watch` a published stream.

Measured: time to first frame (`first_frame`, from the scheduled `watch` to the first decoded
video frame, docs/loadtest.md "Metrics"), frames received (`media_frames`), and the added latency read from
the pixels (`media_latency`, glass to glass: capture stamp to decoded frame) when the media
package's stamped test source and reader are installed (`media.testing`). Without them the publisher sends aiortc's plain test pattern and `media_latency` is
reported as not measured.

All WebRTC traffic stays on loopback: no ICE servers, host candidates pinned to 127.0.0.1
(aioice offers no loopback candidate by default): test traffic never leaves the machine.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from client_sdk.protocol import Code, Op
from loadtest.run import RunContext, Scenario
from loadtest.schedule import OpenLoop, spike, steady
from loadtest.session import RequestError, Session

StampReader = Callable[[Any], int | None]


def pin_loopback_ice() -> None:
    """aioice offers only 127.0.0.1 from here on (this process is a test client)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


@dataclass(frozen=True)
class StampedMedia:
    """The media package's stamped source and reader (`media.testing`), when installed."""

    source: Callable[..., Any]  # StampedVideoTrack(fps=...)
    read: StampReader
    latency_ms: Callable[[int, int], int]  # (stamp, wall-clock now in ms) -> ms


def stamped_testing() -> StampedMedia | None:
    """`media.testing.StampedVideoTrack`, `read_stamp` and `latency_ms`, if they exist.

    The stamp is wall-clock ms truncated to 40 bits, so the subtraction must be the media
    package's own (`latency_ms`, modulo 2**40). Wall clock: publisher and viewers on one host.
    Without the package the publisher sends aiortc's plain test pattern and `media_latency`
    is reported as not measured.
    """
    try:
        mod = importlib.import_module("media.testing")
    except ImportError:
        return None
    source = getattr(mod, "StampedVideoTrack", None)
    reader = getattr(mod, "read_stamp", None)
    latency = getattr(mod, "latency_ms", None)
    if latency is None:
        stamp_mod = importlib.import_module("media.testing.stamp") if source is not None else None
        latency = getattr(stamp_mod, "latency_ms", None)
    if source is None or reader is None or latency is None:
        return None
    return StampedMedia(source, reader, latency)


async def publish(ctx: RunContext, streamer: Session, make_track: Callable[[], Any] | None) -> Any:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = make_track() if make_track is not None else VideoStreamTrack()
    pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    reply = await streamer.request(Op.PUBLISH, room=ctx.config.room, sdp=pc.localDescription.sdp,
                                   timeout_s=ctx.config.join_timeout_s)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=str(reply["sdp"]), type="answer"))
    return pc


class MediaViewer:
    """One WebRTC viewer; its peer connection and offer are made before its scheduled time.

    Time to first frame runs from the first signalling frame (`watch`) to the first decoded
    frame (docs/loadtest.md "Metrics"). Creating the peer connection (a DTLS certificate, ICE gathering) is
    the viewer's own CPU work, so it happens up front and cannot stall other viewers' clocks.
    """

    def __init__(self, ctx: RunContext, session: Session, stamped: StampedMedia | None) -> None:
        self.ctx = ctx
        self.session = session
        self.stamped = stamped
        self.pc: Any = None
        self.first: asyncio.Future[int] | None = None
        self.pumps: list[asyncio.Future[None]] = []

    async def prepare(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.first = asyncio.get_running_loop().create_future()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())

    def _on_track(self, track: Any) -> None:
        self.pumps.append(asyncio.ensure_future(self._pump(track)))

    async def _pump(self, track: Any) -> None:
        metrics = self.ctx.metrics
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            now = time.monotonic_ns()
            metrics.count("media_frames")
            if self.first is not None and not self.first.done():
                self.first.set_result(now)
            if self.stamped is not None:
                try:
                    st = self.stamped.read(frame)
                except Exception:
                    st = None
                if isinstance(st, int):
                    wall_ms = (time.time_ns() - (time.monotonic_ns() - now)) // 1_000_000
                    ms = self.stamped.latency_ms(st, wall_ms)
                    metrics.record("media_latency", max(0, ms) * 1_000_000, now)

    async def watch(self, scheduled_ns: int, hold_s: float) -> None:
        from aiortc import RTCSessionDescription

        cfg = self.ctx.config
        assert self.first is not None
        try:
            reply = await self.session.request(Op.WATCH, room=cfg.room, sdp=self.pc.localDescription.sdp,
                                               timeout_s=cfg.join_timeout_s)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=str(reply["sdp"]), type="answer"))
            got = await asyncio.wait_for(self.first, cfg.join_timeout_s)
        except RequestError as exc:
            if exc.code == Code.UNKNOWN_OP:
                raise
            self.ctx.metrics.error("first_frame", exc.code)
            return
        except TimeoutError:
            self.ctx.metrics.timeout("first_frame")
            return
        except Exception as exc:
            self.ctx.metrics.error("first_frame", type(exc).__name__)
            return
        self.ctx.metrics.record("first_frame", got - scheduled_ns, got)
        await asyncio.sleep(hold_s)

    async def close(self) -> None:
        for p in self.pumps:
            p.cancel()
        if self.pc is not None:
            await self.pc.close()


class SinkViewer:
    """A viewer that never decodes (`media.testing.RtpSinkViewer`): counts RTP, drops it.

    Decoding 50 video streams would make the generator the bottleneck; sinks cost next to
    nothing. Their `first_frame_rtp` runs from the scheduled `watch` to the marker packet of
    the first complete video frame (received, not decoded), polled every 5 ms.
    """

    def __init__(self, ctx: RunContext, session: Session, sink_cls: Any) -> None:
        self.ctx = ctx
        self.session = session
        self.sink = sink_cls(audio=False)
        self.offer = ""

    async def prepare(self) -> None:
        self.offer = await self.sink.offer()

    async def watch(self, scheduled_ns: int, hold_s: float) -> None:
        cfg = self.ctx.config
        metrics = self.ctx.metrics
        try:
            reply = await self.session.request(Op.WATCH, room=cfg.room, sdp=self.offer,
                                               timeout_s=cfg.join_timeout_s)
            await self.sink.accept(str(reply["sdp"]))
            deadline = time.monotonic() + cfg.join_timeout_s
            while self.sink.first_frame_at is None:
                if time.monotonic() > deadline:
                    raise TimeoutError
                await asyncio.sleep(0.005)
        except RequestError as exc:
            if exc.code == Code.UNKNOWN_OP:
                raise
            metrics.error("first_frame_rtp", exc.code)
            return
        except TimeoutError:
            metrics.timeout("first_frame_rtp")
            return
        except Exception as exc:
            metrics.error("first_frame_rtp", type(exc).__name__)
            return
        now = time.monotonic_ns()
        at = now - int((time.time() - float(self.sink.first_frame_at)) * 1e9)
        metrics.record("first_frame_rtp", max(0, at - scheduled_ns), now)
        await asyncio.sleep(hold_s)

    async def close(self) -> None:
        self.ctx.metrics.count("media_frames_rtp", int(self.sink.video_frames))
        await self.sink.close()


async def media_viewers(ctx: RunContext, streamer: Session, k: int, rate: float, burst: bool,
                        hold_s: float, first_index: int = 6_000_000, probes: int | None = None) -> list[str]:
    """Publish, then K viewers watch (a burst, or open-loop at `rate`); returns notes.

    `probes` of them decode (time to first decoded frame, pixel-stamped latency); the rest
    are RTP sinks when `media.testing` provides them (else every viewer decodes). The
    publisher encodes in this process: knob `fps` (default 30) bounds what that costs.
    """
    from loadtest.scenarios.buyers import connect_actors

    pin_loopback_ice()
    stamped = stamped_testing()
    notes = []
    if stamped is None:
        notes.append("media.testing (stamped source + reader) not installed: media_latency not measured")
    try:
        sink_cls: Any = importlib.import_module("media.testing").RtpSinkViewer
    except (ImportError, AttributeError):
        sink_cls = None
    decoding = k if probes is None or sink_cls is None else min(k, probes)
    sessions = await connect_actors(ctx, k, 100.0, first_index=first_index)
    viewers: list[MediaViewer | SinkViewer] = [
        MediaViewer(ctx, s, stamped) if i < decoding else SinkViewer(ctx, s, sink_cls)
        for i, s in enumerate(sessions)
    ]
    for v in viewers:
        await v.prepare()
    offsets = spike(len(viewers), 0.0) if burst else steady(len(viewers), rate)
    failures: list[BaseException] = []
    pub: Any = None

    async def go(i: int, scheduled_ns: int) -> None:
        try:
            await viewers[i].watch(scheduled_ns, hold_s)
        except RequestError as exc:
            failures.append(exc)

    try:
        fps = int(ctx.knob("fps", 30))
        source = (lambda: stamped.source(fps=fps)) if stamped is not None else None
        pub = await publish(ctx, streamer, source)
        await OpenLoop(offsets, go, ctx.metrics, failure_metric="first_frame").run()
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        if pub is not None:
            await pub.close()
    if failures:
        raise failures[0]
    return notes


class MediaScenario(Scenario):
    name = "media"
    summary = "K aiortc viewers watch a stream: time to first frame, frames, added latency"
    metrics = ("join", "first_frame", "first_frame_rtp", "media_latency")
    default_slos: ClassVar[tuple[str, ...]] = ("first_frame.p95<1s", "first_frame_rtp.p95<1s")
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 3, "rate": 10, "duration_s": 1, "probes": 2, "burst": 0},
        "full": {"viewers": 50, "rate": 10, "duration_s": 10, "probes": 3, "burst": 1},
    }

    def actor_sockets(self, config: object) -> int:
        return int(getattr(config, "viewers", 3)) * 2 + 4

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        streamer = await ctx.session("streamer", 0)
        await streamer.request(Op.JOIN, room=cfg.room)
        ctx.phase = f"{cfg.viewers} WebRTC viewers"
        ctx.notes.extend(await media_viewers(ctx, streamer, cfg.viewers, cfg.rate,
                                             bool(ctx.knob("burst", 0)), cfg.duration_s,
                                             probes=cfg.probes))
        got = ctx.metrics.summary("first_frame").count + ctx.metrics.summary("first_frame_rtp").count
        ctx.check("every viewer got a first frame", got == cfg.viewers, f"{got} of {cfg.viewers}")
