"""Media workers: a room's viewers served by N processes, one per core, as mediasoup does.

One Python process forwards media on one core. With ``media_workers = N`` the relay keeps its
ingest (the publishers' and edge pulls' peer connections, and the websocket signalling of
the server around it) in the server process and serves the viewers in N worker processes
(``media.worker``). Each worker gets every packet of every stream once, over its own local
socket (``media.channel``), and forwards it to its own viewers: the work per viewer, which is
what grows, is spread over the cores; the work per packet (ingest, one socket write per
worker) is paid once.

Signalling stays on the websocket: a ``watch`` reaches the server, which routes it to the
worker with the fewest viewers; the answer comes from that worker (its ICE candidate and DTLS
fingerprint), and so do the viewer's trickled candidates and ``unwatch``. A burst of joins is
therefore spread over the workers too: their DTLS handshakes run in parallel.

A worker that dies is started again (after 0.5 s, doubling up to 30 s while it keeps dying
young). Its viewers' peer connections died with it: the pool forgets them and tells the relay's
``on_lost`` callback which viewers of which room must watch again (the server tells each on its
websocket; the SDKs re-watch by themselves). Workers are started with the first stream, not
with the server: a server that never relays media never starts a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import Code
from media import channel
from media.channel import Channel, Message
from media.errors import MediaError
from media.ingest import Feed, Ingest
from media.packet import MAX_BATCH, MediaPacket, pack, pack_batch
from media.worker import codec_to_wire

log = logging.getLogger("souk.media.workers")

START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 3.0
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that lived this long restarts at the shortest delay again


@dataclass(eq=False)
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    ready: bool = False
    started_at: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    viewers: int = 0  # routed here, watches in flight included


@dataclass(eq=False)
class _Route:
    worker: _Worker
    edge: bool
    answered: bool = False  # a watch still in flight fails on its own if the worker dies


class WorkerPool:
    """The viewers' side of a relay, in ``count`` worker processes (see the module doc).

    ``on_lost(room, viewer_ids)``: these viewers' worker died; they must watch again.
    """

    def __init__(
        self,
        count: int,
        rtc_host: str,
        connect_timeout_s: float,
        ingest: Ingest,
        on_lost: Callable[[str, list[str]], None],
    ) -> None:
        if count < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.rtc_host = rtc_host
        self.connect_timeout_s = connect_timeout_s
        self.ingest = ingest
        self.on_lost = on_lost
        self.restarts = 0
        self._workers = [_Worker(i) for i in range(count)]
        self._sids: dict[Feed, int] = {}
        self._next_sid = 1
        self._routes: dict[str, dict[str, _Route]] = {}
        self._samples: list[float] = []
        self._retired: dict[str, int] = {"packets_out_total": 0, "retransmits_total": 0}
        self._ready = asyncio.Event()
        self._started = False
        self._closed = False
        self._delays = [RESTART_DELAY_S] * count
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: list[bytes] = []  # packed packets of this loop turn, not yet sent
        self._pending_size = 0

    # ------------------------------------------------------------------ processes

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self) -> None:
        """Start every worker (once, with the first stream)."""
        if self._started or self._closed:
            return
        self._started = True
        for worker in self._workers:
            self._spawn_task(self._run(worker))

    async def _run(self, worker: _Worker) -> None:
        """Start ``worker``'s process and bring it up to date with the streams."""
        parent, child = channel.pair()
        try:
            worker.proc = self._popen(child.fileno())
        finally:
            child.close()
        worker.started_at = time.monotonic()
        up: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def on_message(message: Message) -> None:
            if message.get("op") == "ready" and not up.done():
                up.set_result(message)
            else:
                self._message(worker, message)

        def on_close() -> None:
            if not up.done():
                up.set_exception(MediaError(Code.UNAVAILABLE, "the media worker exited"))
            self._died(worker)

        worker.channel = Channel(parent, self._unexpected_packet, on_message, on_close)
        try:
            await asyncio.wait_for(up, START_TIMEOUT_S)
        except (TimeoutError, MediaError) as exc:
            log.error("media worker %d did not start: %s", worker.index, exc)
            if not worker.channel.closed:
                worker.channel.close()
                self._died(worker)
            return
        for feed, sid in self._sids.items():  # every stream it must know, before any packet
            if feed.attached:
                worker.channel.send(self._open_message(feed, sid))
        worker.ready = True
        self._ready.set()
        log.info("media worker %d started", worker.index, extra={"pid": worker.proc.pid})

    def _popen(self, fd: int) -> subprocess.Popen[bytes]:
        """Fork the worker from the loop's thread, never from a helper thread: the kernel's
        parent-death signal follows the thread that forked, not the process."""
        return subprocess.Popen(
            [sys.executable, "-m", "media.worker", "--fd", str(fd), "--parent", str(os.getpid()),
             "--rtc-host", self.rtc_host, "--connect-timeout", str(self.connect_timeout_s),
             "--log-level", logging.getLevelName(log.getEffectiveLevel())],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )

    def _unexpected_packet(self, view: memoryview) -> None:
        log.warning("a media worker sent a media packet; ignored")

    def _died(self, worker: _Worker) -> None:
        """The worker's socket closed: forget its viewers, tell who must re-watch, restart."""
        was_ready, worker.ready = worker.ready, False
        self._ready_changed()
        for key in ("packets_out_total", "retransmits_total"):
            self._retired[key] += worker.stats.get(key, 0)
        worker.stats = {}
        lost: dict[str, list[str]] = {}
        for room, routes in list(self._routes.items()):
            for viewer_id, route in list(routes.items()):
                if route.worker is worker:
                    del routes[viewer_id]
                    if route.answered:
                        lost.setdefault(room, []).append(viewer_id)
            if not routes:
                del self._routes[room]
        worker.viewers = 0
        self._spawn_task(self._reap(worker.proc))
        if self._closed:
            return
        log.warning("media worker %d died; %d viewers must watch again", worker.index,
                    sum(len(v) for v in lost.values()))
        for room, viewer_ids in lost.items():
            try:
                self.on_lost(room, viewer_ids)
            except Exception:
                log.exception("telling viewers to watch again failed")
        lived = time.monotonic() - worker.started_at
        delay = RESTART_DELAY_S if lived > HEALTHY_AFTER_S else self._delays[worker.index]
        self._delays[worker.index] = min(delay * 2, RESTART_DELAY_MAX_S)
        self.restarts += int(was_ready)
        self._spawn_task(self._restart(worker, delay))

    async def _restart(self, worker: _Worker, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._closed:
            worker.channel = None
            await self._run(worker)

    async def _reap(self, proc: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
        """Wait for a worker that closed its socket to exit; kill it if it lingers."""
        if proc is None:
            return
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            await asyncio.sleep(0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)

    def _ready_changed(self) -> None:
        if not any(w.ready for w in self._workers):
            self._ready.clear()

    def pids(self) -> list[int]:
        """The running workers' process ids (for tests and operators)."""
        return [w.proc.pid for w in self._workers if w.ready and w.proc is not None]

    # ------------------------------------------------------------------ worker messages

    def _message(self, worker: _Worker, message: Message) -> None:
        op = message.get("op")
        if op == "keyframe":
            feed = self._feed(int(message["sid"]))
            if feed is not None:
                feed.request_keyframe()
        elif op == "gone":
            routes = self._routes.get(str(message["room"]), {})
            route = routes.get(str(message["viewer"]))
            if route is not None and route.worker is worker:
                del routes[str(message["viewer"])]
                worker.viewers -= 1
                if not routes:
                    self._routes.pop(str(message["room"]), None)
        elif op == "stats":
            worker.stats = {k: int(v) for k, v in dict(message["stats"]).items()}
            self._samples.extend(float(ms) for ms in message.get("first_keyframe_ms", ()))
            del self._samples[:-4096]

    def _feed(self, sid: int) -> Feed | None:
        for feed, known in self._sids.items():
            if known == sid:
                return feed
        return None

    # ------------------------------------------------------------------ the ingest's listener

    def _open_message(self, feed: Feed, sid: int) -> Message:
        return {"op": "open", "sid": sid, "room": feed.room, "kind": feed.kind,
                "codec": codec_to_wire(feed.codec), "epoch": feed.epoch}

    def feed_attached(self, feed: Feed) -> None:
        self._flush()  # the old epoch's packets go before the new epoch's opening
        sid = self._sids.get(feed)
        if sid is None:
            sid = self._sids[feed] = self._next_sid
            self._next_sid += 1
            feed.outputs.insert(0, self._output(sid))
        for worker in self._workers:
            if worker.ready and worker.channel is not None:
                worker.channel.send(self._open_message(feed, sid))
        self._start()

    def _output(self, sid: int) -> Callable[[MediaPacket], None]:
        pending = self._pending

        def output(packet: MediaPacket) -> None:
            data = pack(sid, packet)  # once, whatever the number of workers
            if not pending:
                asyncio.get_running_loop().call_soon(self._flush)
            pending.append(data)
            self._pending_size += len(data) + 2
            if self._pending_size > MAX_BATCH:
                self._flush()

        return output

    def _flush(self) -> None:
        """Send what arrived in this turn of the loop as one message to each worker: a video
        frame's packets come together, and a worker then wakes once for them, not per packet."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else pack_batch(self._pending)
        self._pending.clear()
        self._pending_size = 0
        for worker in self._workers:
            if worker.ready and worker.channel is not None:
                worker.channel.send_packet(data)

    def _tell(self, message: Message) -> None:
        self._flush()  # the packets before a stream change go before it
        for worker in self._workers:
            if worker.ready and worker.channel is not None:
                worker.channel.send(message)

    def feed_detached(self, feed: Feed) -> None:
        sid = self._sids.get(feed)
        if sid is not None:
            self._tell({"op": "detach", "sid": sid})

    def feed_closed(self, feed: Feed) -> None:
        sid = self._sids.pop(feed, None)
        if sid is not None:
            self._tell({"op": "drop", "sid": sid})

    # ------------------------------------------------------------------ viewers

    async def _pick(self) -> _Worker:
        """The ready worker with the fewest viewers (watches in flight included)."""
        self._start()
        if not any(w.ready for w in self._workers):
            try:
                await asyncio.wait_for(self._ready.wait(), START_TIMEOUT_S)
            except TimeoutError:
                raise MediaError(Code.UNAVAILABLE, "no media worker is running") from None
        ready = [w for w in self._workers if w.ready]
        if not ready:
            raise MediaError(Code.UNAVAILABLE, "no media worker is running")
        return min(ready, key=lambda w: w.viewers)

    async def watch(
        self,
        room: str,
        viewer_id: str,
        offer_sdp: str,
        *,
        edge: bool,
        arrived: float,
        kinds: list[str] | None = None,
    ) -> str:
        if self.has_viewer(room, viewer_id):
            await self.unwatch(room, viewer_id)
        worker = await self._pick()
        assert worker.channel is not None
        route = _Route(worker, edge)
        self._routes.setdefault(room, {})[viewer_id] = route
        worker.viewers += 1
        try:
            reply = await worker.channel.request(
                {"op": "watch", "room": room, "viewer": viewer_id, "sdp": offer_sdp,
                 "edge": edge, "arrived": arrived, "kinds": kinds},
                REQUEST_TIMEOUT_S,
            )
        except BaseException:
            self._forget(room, viewer_id, route)
            raise
        if self._routes.get(room, {}).get(viewer_id) is not route:
            raise MediaError(Code.UNAVAILABLE, "the media worker went away during the watch")
        route.answered = True
        return str(reply["sdp"])

    def _forget(self, room: str, viewer_id: str, route: _Route) -> None:
        routes = self._routes.get(room)
        if routes is not None and routes.get(viewer_id) is route:
            del routes[viewer_id]
            route.worker.viewers -= 1
            if not routes:
                del self._routes[room]

    async def unwatch(self, room: str, viewer_id: str) -> bool:
        route = self._routes.get(room, {}).get(viewer_id)
        if route is None:
            return False
        self._forget(room, viewer_id, route)
        if route.worker.channel is not None and not route.worker.channel.closed:
            with contextlib.suppress(MediaError):
                await route.worker.channel.request(
                    {"op": "unwatch", "room": room, "viewer": viewer_id}, REQUEST_TIMEOUT_S
                )
        return True

    async def add_ice(self, room: str, viewer_id: str, candidate: dict[str, Any]) -> bool:
        route = self._routes.get(room, {}).get(viewer_id)
        if route is None or route.worker.channel is None:
            return False
        reply = await route.worker.channel.request(
            {"op": "ice", "room": room, "viewer": viewer_id, "candidate": candidate},
            REQUEST_TIMEOUT_S,
        )
        return bool(reply.get("found"))

    def viewer_count(self, room: str) -> int:
        return len(self._routes.get(room, ()))

    def has_viewer(self, room: str, viewer_id: str) -> bool:
        return viewer_id in self._routes.get(room, {})

    def end_users(self) -> dict[str, int]:
        counts = {r: sum(not v.edge for v in routes.values()) for r, routes in self._routes.items()}
        return {r: n for r, n in counts.items() if n}

    def first_keyframe_samples(self) -> list[float]:
        samples, self._samples = self._samples, []
        return samples

    def stats(self) -> dict[str, int]:
        out = dict(self._retired)
        for worker in self._workers:
            for key in out:
                out[key] += worker.stats.get(key, 0)
        out["viewers"] = sum(len(routes) for routes in self._routes.values())
        out["media_workers"] = sum(w.ready for w in self._workers)
        out["media_worker_restarts_total"] = self.restarts
        out["worker_packets_dropped_total"] = sum(
            w.channel.packets_dropped for w in self._workers if w.channel is not None
        )
        return out

    # ------------------------------------------------------------------ teardown

    async def close_room(self, room: str) -> None:
        routes = self._routes.pop(room, {})
        for route in routes.values():
            route.worker.viewers -= 1
        for worker in self._workers:
            if worker.ready and worker.channel is not None:
                with contextlib.suppress(MediaError):
                    await worker.channel.request({"op": "close_room", "room": room},
                                                 REQUEST_TIMEOUT_S)

    async def close(self) -> None:
        """Stop every worker: ask, then close its socket (EOF), then kill what lingers."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.send({"op": "stop"})
        for worker in self._workers:
            worker.ready = False
            if worker.channel is not None:
                await asyncio.sleep(0)  # let the stop message leave
                worker.channel.close()
        await asyncio.gather(*(self._reap(w.proc, STOP_TIMEOUT_S) for w in self._workers))
        self._routes.clear()
