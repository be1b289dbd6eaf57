"""A crowd of viewers in one process: many cheap silent viewers and a few probe viewers.

- Silent viewers read only: after the `join` reply they count frames and check that `seq`
  grows by one per channel using `framescan` (no decoding), so thousands fit in one process.
- Probe viewers decode every frame: each stamped delivery is timed (metric named after the
  stamp's kind: `event`, `mirror`...), `ts`-based push latency goes to `push`, and the ids they
  got are reported so that the coordinator can count every expected event that never came.

Joins follow an open-loop schedule; `join` latency runs from each viewer's scheduled time to
the `ok` with the snapshot (TCP connect + websocket handshake + auth + join), as docs/loadtest.md "Metrics" defines it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, Frame, Op, decode
from loadtest.credentials import TokenSource
from loadtest.framescan import scan_seqs
from loadtest.metrics import Metrics
from loadtest.rawviewer import RawViewer, open_silent
from loadtest.schedule import OpenLoop
from loadtest.session import RequestError, Session
from loadtest.stamps import Clock, read_stamp
from loadtest.watchdog import Watchdog

JOIN = "join"
PUSH = "push"


@dataclass
class CrowdSpec:
    """What one process's crowd does; plain data so it can cross a process boundary."""

    url: str
    target: dict[str, str]  # {"room": id} or {"group": id}
    silent: int
    probes: int
    offsets: list[int]  # join schedule, ns after the start; probes take the first slots
    start_ns: int  # 0: wait for the coordinator's start signal (worker processes)
    t0_ns: int
    room: str = "demo"
    secret: str | None = None
    tokens: list[str] = field(default_factory=list)  # used when there is no secret
    role: str = "viewer"
    first_index: int = 0
    run_id: str = "lt"
    clock: str = "mono"
    join_timeout_s: float = 10.0
    label: str = "crowd"
    group_join: bool = False  # members become group members (`group_join`) before `join`
    # frames a silent viewer sends after its `join`, each awaiting its reply (e.g. entering a
    # lucky draw); its join latency then runs to the last reply, recorded as `join_metric`
    then: list[Frame] = field(default_factory=list)
    join_metric: str = JOIN
    urls: list[str] = field(default_factory=list)  # the cluster's nodes (see Config.urls)

    def url_of(self, index: int) -> str:
        """The node of this crowd's `index`-th viewer: round-robin by the global index."""
        if not self.urls:
            return self.url
        return self.urls[(self.first_index + index) % len(self.urls)]


class CrowdControl(Protocol):
    def progress(self, data: dict[str, Any]) -> None: ...
    def stop_requested(self) -> bool: ...
    def start_ns(self) -> int: ...  # 0 until the coordinator has set the common start


@dataclass
class ProbeReport:
    joined_ns: int
    received: dict[str, list[int]]


class SeqTracker:
    """Per-channel `seq` continuity: gaps and duplicates are counted, never ignored.

    A hole is only a gap if it stays one: the seqs skipped are kept as missing, and one that
    arrives later (a `resume` reply, or a cluster node's replay, delivering it after a newer
    live event) fills its hole instead of counting as a duplicate. `gaps` is what is still
    missing; `dups` an event seen twice."""

    MAX_MISSING = 100_000  # per channel; past it, further holes are counted and forgotten

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.missing: dict[str, set[int]] = {}
        self.lost = 0  # holes beyond MAX_MISSING, never fillable
        self.dups = 0

    @property
    def gaps(self) -> int:
        return self.lost + sum(len(m) for m in self.missing.values())

    def baseline(self, ch: str, seq: int) -> None:
        """The join snapshot's seq. Events that arrived before the reply and lie past it are
        kept (the tracker never moves back)."""
        prev = self.last.get(ch)
        if prev is None or prev < seq:
            self.last[ch] = seq

    def see(self, ch: str, seq: int) -> None:
        prev = self.last.get(ch)
        if prev is not None:
            if seq > prev + 1:
                missing = self.missing.setdefault(ch, set())
                room = max(0, self.MAX_MISSING - len(missing))
                hole = seq - prev - 1
                missing.update(range(prev + 1, prev + 1 + min(hole, room)))
                self.lost += max(0, hole - room)
            elif seq <= prev:
                holes = self.missing.get(ch)
                if holes is not None and seq in holes:
                    holes.discard(seq)  # a late event fills its hole
                else:
                    self.dups += 1
                return
        self.last[ch] = seq


def _channel(target: dict[str, str]) -> str:
    if "group" in target:
        return f"group:{target['group']}"
    return f"room:{target['room']}"


class Crowd:
    def __init__(self, spec: CrowdSpec, control: CrowdControl, metrics: Metrics) -> None:
        self.spec = spec
        self.control = control
        self.metrics = metrics
        self.clock = Clock(spec.clock)
        self.channel = _channel(spec.target)
        self.joined = 0
        self.failed = 0
        self.frames = 0
        self.silent_seq: list[SeqTracker] = []
        self.sockets: list[RawViewer] = []
        self.sessions: list[Session] = []
        self.probe_reports: list[ProbeReport] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.joining_done = False
        self.ready = False
        self._minted: list[str] = []
        self._mint_all(spec.silent + spec.probes)

    # viewers -------------------------------------------------------------------------
    def _token(self, index: int) -> str:
        if self._minted:
            return self._minted[index]
        s = self.spec
        if s.secret is not None:
            src = TokenSource(s.url, s.room, s.secret, s.run_id)
            return src.mint(s.role, s.first_index + index)
        return s.tokens[index % len(s.tokens)]

    def _mint_all(self, total: int) -> None:
        """Sign every viewer's token before the schedule is set (at construction): signing
        (~40 µs each) in the arrival path would be the generator's time, counted as the
        server's."""
        s = self.spec
        if s.secret is not None:
            src = TokenSource(s.url, s.room, s.secret, s.run_id)
            self._minted = [src.mint(s.role, s.first_index + i) for i in range(total)]

    async def _join_probe(self, index: int, scheduled_ns: int) -> None:
        received: dict[str, list[int]] = {}
        seq = SeqTracker()
        report = ProbeReport(0, received)

        def on_event(ev: Frame, now: int) -> None:
            ch, n = ev.get("ch"), ev.get("seq")
            if isinstance(ch, str) and isinstance(n, int):
                seq.see(ch, n)
            ts = ev.get("ts")
            if isinstance(ts, int):
                self.metrics.record(PUSH, max(0, self.clock_wall_ms(now) - ts) * 1_000_000, now)
            st = read_stamp(ev.get("text"))
            if st is not None and ev.get("ch") == self.channel:
                kind, ident, at = st
                self.metrics.record(kind, self.clock.since(at, now), now)
                received.setdefault(kind, []).append(ident)

        s: Session | None = None
        try:
            s = await Session.open(self.spec.url_of(index), self._token(index), on_event=on_event,
                                   timeout_s=self.spec.join_timeout_s)
            if self.spec.group_join and "group" in self.spec.target:
                await s.request(Op.GROUP_JOIN, group=self.spec.target["group"])
            reply = await s.request(Op.JOIN, timeout_s=self.spec.join_timeout_s, **self.spec.target)
        except Exception as exc:  # any failure to join is the join's failure
            if isinstance(exc, TimeoutError):
                self.metrics.timeout(JOIN)
            else:
                self.metrics.error(JOIN, exc.code if isinstance(exc, RequestError) else type(exc).__name__)
            self.failed += 1
            if s is not None:
                self.sessions.append(s)  # closed with the others
            return
        now = time.monotonic_ns()
        self.metrics.record(JOIN, now - scheduled_ns, now)
        snap = reply.get("snapshot")
        if isinstance(snap, dict) and isinstance(snap.get("seq"), int):
            seq.baseline(self.channel, snap["seq"])
        report.joined_ns = now
        self.probe_reports.append(report)
        self.sessions.append(s)
        self.silent_seq.append(seq)
        self.joined += 1

    @staticmethod
    def clock_wall_ms(mono_ns: int) -> int:
        return (time.time_ns() - (time.monotonic_ns() - mono_ns)) // 1_000_000

    async def _join_silent(self, index: int, scheduled_ns: int) -> None:
        s = self.spec
        steps: list[Frame] = [{"op": Op.AUTH, "token": self._token(index)}]
        if s.group_join and "group" in s.target:
            steps.append({"op": Op.GROUP_JOIN, "group": s.target["group"]})
        steps.append({"op": Op.JOIN, **s.target})
        steps.extend(s.then)
        tracker = SeqTracker()

        def on_frame(data: bytes) -> None:
            self.frames += 1
            pairs = scan_seqs(data)
            if pairs is None:
                pairs = _decode_pairs(data)
            for ch, seq in pairs:
                tracker.see(ch, seq)

        try:
            viewer, reply = await open_silent(s.url_of(index), steps, on_frame, s.join_timeout_s)
        except TimeoutError:
            self.metrics.timeout(s.join_metric)
            self.failed += 1
            return
        except Exception as exc:  # refused, reset, HTTP 503 on upgrade, an error reply...
            self.metrics.error(s.join_metric, getattr(exc, "code", type(exc).__name__))
            self.failed += 1
            return
        now = time.monotonic_ns()
        self.metrics.record(s.join_metric, now - scheduled_ns, now)
        self.joined += 1
        snap = reply.get("snapshot")
        if isinstance(snap, dict) and isinstance(snap.get("seq"), int):
            tracker.baseline(self.channel, snap["seq"])
        self.silent_seq.append(tracker)
        self.sockets.append(viewer)

    # running ---------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        s = self.spec
        total = s.silent + s.probes

        async def join(i: int, scheduled_ns: int) -> None:
            if i < s.probes:
                await self._join_probe(i, scheduled_ns)
            else:
                await self._join_silent(i, scheduled_ns)

        watchdog = Watchdog(self.metrics, label=s.label)
        watchdog.start()
        reporter = asyncio.create_task(self._report_progress(total))
        try:
            start = s.start_ns
            if not start:
                # a spawned worker boots in a second or more on a busy host: the schedule
                # starts when every worker is ready, not at a time guessed beforehand
                self.ready = True
                self.control.progress(self._progress(total))
                while not (start := self.control.start_ns()):
                    await asyncio.sleep(0.005)
            await OpenLoop(s.offsets[:total], join, self.metrics, failure_metric=JOIN).run(start)
            # thousands of long-lived connection objects: keep the cyclic GC from walking
            # them again and again (a full collection would show up as loop lag)
            gc.collect()
            gc.freeze()
            self.joining_done = True
            self.control.progress(self._progress(total))
            # the stop signal may come from another process (a multiprocessing.Event): poll it
            while not self.control.stop_requested():
                await asyncio.sleep(0.05)
        finally:
            reporter.cancel()
            await watchdog.stop()
            await self._close_all()
        gaps = sum(t.gaps for t in self.silent_seq)
        dups = sum(t.dups for t in self.silent_seq)
        self.metrics.count("frames", self.frames)
        self.metrics.count("seq_gaps", gaps)
        self.metrics.count("seq_dups", dups)
        last = Counter(t.last.get(self.channel, -1) for t in self.silent_seq)
        return {
            "label": s.label,
            "metrics": self.metrics.to_dict(),
            "probes": [asdict(p) for p in self.probe_reports],
            "last_seq": {str(k): v for k, v in last.items()},
            "cpu": {s.label: watchdog.cpu},
            "rss_mb": {s.label: round(watchdog.rss_mb, 1)},
            "joined": self.joined,
            "failed": self.failed,
        }

    def _progress(self, total: int) -> dict[str, Any]:
        return {
            "label": self.spec.label,
            "planned": total,
            "joined": self.joined,
            "failed": self.failed,
            "frames": self.frames,
            "joining_done": self.joining_done,
            "ready": self.ready,
        }

    async def _report_progress(self, total: int) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.control.progress(self._progress(total))

    async def _close_all(self) -> None:
        for t in self.readers:
            t.cancel()
        for viewer in self.sockets:
            viewer.close()
        closers = [x.close() for x in self.sessions]
        if closers:
            tasks = [asyncio.ensure_future(c) for c in closers]
            _, pending = await asyncio.wait(tasks, timeout=10.0)
            for t in pending:
                t.cancel()


def _decode_pairs(data: bytes) -> list[tuple[str, int]]:
    try:
        frame = decode(data, SUBPROTOCOL_MSGPACK)
    except ValueError:
        return []
    items = frame.get("items", []) if frame["op"] == Op.BATCH else [frame]
    out = []
    for ev in items:
        if isinstance(ev, dict) and isinstance(ev.get("ch"), str) and isinstance(ev.get("seq"), int):
            out.append((ev["ch"], ev["seq"]))
    return out
