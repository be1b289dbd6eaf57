"""A media worker process: the viewers of every room it is given, fed over its socket.

Started by ``media.workers.WorkerPool`` as ``python -m media.worker --fd N ...`` with one end
of a sequenced-packet socket (``media.channel``). It runs an :class:`~media.audience.Audience`
and answers the pool's control messages:

- ``open`` {sid, room, kind, codec, epoch}: a source starts a new epoch of a room's stream;
  packets tagged ``sid`` follow. ``detach`` {sid}: the source went away. ``drop`` {sid}: the
  stream is gone (its room closed or a new codec replaced it).
- ``watch`` {room, viewer, sdp, edge, arrived} -> {sdp} (the answer) or {error, message};
  ``unwatch`` / ``ice`` -> {found}; ``close_room`` -> {}; ``stop``: close everything, exit.

It sends ``ready`` once, ``keyframe`` {sid} when its viewers need one (the ingest throttles
PLIs for all workers), ``gone`` {room, viewer} when a viewer's connection failed or never came
up, and ``stats`` every second (its counters and the watch-to-first-keyframe delays).

It never outlives the server: the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``
on Linux), and it exits when its socket reaches EOF (any platform, any way the parent went).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from client_sdk.protocol import Code
from media import hooks
from media.audience import Audience
from media.channel import Channel, Message
from media.errors import MediaError
from media.packet import MediaPacket, unpack

log = logging.getLogger("souk.media.worker")

STATS_INTERVAL_S = 1.0
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies; exit now if it already
    has (it may have died before the request took effect)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:  # pragma: no cover
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(0)


def codec_to_wire(codec: RTCRtpCodecParameters) -> dict[str, Any]:
    return {
        "mimeType": codec.mimeType,
        "clockRate": codec.clockRate,
        "channels": codec.channels,
        "payloadType": codec.payloadType,
        "parameters": dict(codec.parameters),
    }


def codec_from_wire(data: dict[str, Any]) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType=str(data["mimeType"]),
        clockRate=int(data["clockRate"]),
        channels=data.get("channels"),
        payloadType=data.get("payloadType"),
        parameters=dict(data.get("parameters") or {}),
    )


def _kinds(value: object) -> list[str] | None:
    """The kinds the server checked the offer for (re-checked here if they look wrong)."""
    if isinstance(value, list) and value and all(k in ("audio", "video") for k in value):
        return [str(k) for k in value]
    return None


class Worker:
    """The worker's side of the channel: an Audience driven by the pool's messages."""

    def __init__(self, sock: socket.socket, connect_timeout_s: float) -> None:
        self.audience = Audience(connect_timeout_s, on_gone=self._gone)
        self.channel = Channel(sock, self._packet, self._message, self._closed)
        self.outputs: dict[int, Callable[[MediaPacket], None]] = {}
        self.streams: dict[int, tuple[str, str]] = {}  # sid -> (room, kind)
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _packet(self, view: memoryview) -> None:
        sid, packet = unpack(view)
        output = self.outputs.get(sid)
        if output is not None:
            output(packet)

    def _message(self, message: Message) -> None:
        op = message.get("op")
        if op == "open":
            sid = int(message["sid"])
            room, kind = str(message["room"]), str(message["kind"])

            def ask(sid: int = sid) -> None:
                self.channel.send({"op": "keyframe", "sid": sid})

            self.streams[sid] = (room, kind)
            self.outputs[sid] = self.audience.open_stream(
                room, kind, codec_from_wire(message["codec"]), int(message["epoch"]), ask
            )
        elif op in ("detach", "drop"):
            sid = int(message["sid"])
            stream = self.streams.get(sid)
            if stream is not None:
                self.audience.close_stream(*stream)
            if op == "drop":
                self.streams.pop(sid, None)
                self.outputs.pop(sid, None)
        elif op in ("watch", "unwatch", "ice", "close_room"):
            task = asyncio.get_running_loop().create_task(self._request(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif op == "stop":
            self.done.set()

    async def _request(self, message: Message) -> None:
        op = message["op"]
        room = str(message.get("room"))
        try:
            if op == "watch":
                answer = await self.audience.watch(
                    room,
                    str(message["viewer"]),
                    str(message["sdp"]),
                    edge=bool(message.get("edge")),
                    arrived=float(message["arrived"]),
                    kinds=_kinds(message.get("kinds")),
                )
                self.channel.reply(message, sdp=answer)
            elif op == "unwatch":
                found = await self.audience.unwatch(room, str(message["viewer"]))
                self.channel.reply(message, found=found)
            elif op == "ice":
                found = await self.audience.add_ice(
                    room, str(message["viewer"]), dict(message["candidate"])
                )
                self.channel.reply(message, found=found)
            elif op == "close_room":
                await self.audience.close_room(room)
                self.channel.reply(message)
        except MediaError as exc:
            self.channel.reply(message, error=exc.code, message=exc.message)
        except Exception as exc:
            log.exception("media worker request %s failed", op)
            self.channel.reply(message, error=Code.INVALID, message=f"{op} failed: {exc}")

    def _gone(self, room: str, viewer_id: str) -> None:
        self.channel.send({"op": "gone", "room": room, "viewer": viewer_id})

    def _closed(self) -> None:
        self.done.set()

    async def run(self) -> None:
        self.channel.send({"op": "ready", "pid": os.getpid()})
        stats = asyncio.get_running_loop().create_task(self._stats())
        try:
            await self.done.wait()
        finally:
            stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats
            await self.audience.close()
            self.channel.close()

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self.channel.send({
                "op": "stats",
                "stats": self.audience.stats(),
                "first_keyframe_ms": self.audience.first_keyframe_samples(),
                "joins": self.audience.joins,
            })


async def serve(fd: int, rtc_host: str, connect_timeout_s: float) -> None:
    sock = socket.socket(fileno=fd)
    hooks.HostPin.acquire(rtc_host)
    hooks.LeanPeers.acquire()
    try:
        await Worker(sock, connect_timeout_s).run()
    finally:
        hooks.LeanPeers.release()
        hooks.HostPin.release()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m media.worker")
    parser.add_argument("--fd", type=int, required=True, help="this worker's socket")
    parser.add_argument("--parent", type=int, required=True, help="the server's pid")
    parser.add_argument("--rtc-host", required=True)
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    # the server handles SIGINT/SIGTERM and stops its workers itself: a Ctrl-C in the terminal
    # (sent to the whole process group) must not kill them mid-drain
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("aioice", "aiortc"):  # a line per ICE check and per packet event
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    import uvloop

    profile = os.environ.get("SOUK_MEDIA_WORKER_PROFILE")  # a directory: cProfile each worker
    if not profile:
        uvloop.run(serve(args.fd, args.rtc_host, args.connect_timeout))
        return
    import cProfile

    with cProfile.Profile() as profiler:
        uvloop.run(serve(args.fd, args.rtc_host, args.connect_timeout))
    profiler.dump_stats(os.path.join(profile, f"media-worker-{os.getpid()}.prof"))


if __name__ == "__main__":
    main()
