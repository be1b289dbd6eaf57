"""Prometheus metrics, one registry per App so several servers can live in one test process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from server.fanout import FanoutStats


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("souk_connections", "Open websocket connections", registry=r)
        self.connections_total = Counter("souk_accepted_connections", "Accepted websocket connections", registry=r)
        self.frames_in = Counter("souk_frames_in_total", "Frames received", ["op"], registry=r)
        self.errors = Counter("souk_errors_total", "Error frames sent", ["code"], registry=r)
        self.op_seconds = Histogram(
            "souk_op_seconds",
            "Time to handle an op",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.events = Gauge("souk_fanout_events", "Events fanned out (cumulative)", registry=r)
        self.writes = Gauge("souk_fanout_writes", "Frames written to subscribers (cumulative)", registry=r)
        self.dropped = Gauge("souk_fanout_dropped", "Droppable frames skipped for slow consumers", registry=r)
        self.overflows = Gauge("souk_fanout_overflows", "Connections closed as slow consumers", registry=r)
        self.rooms = Gauge("souk_rooms", "Rooms and groups in memory", registry=r)
        self.media = Gauge("souk_media", "Media relay counters (MediaRelay.stats(), cascade)",
                           ["stat"], registry=r)
        self.media_first_keyframe = Histogram(
            "souk_media_first_keyframe_seconds",
            "From a watch reaching the server to its first keyframe packet sent",
            buckets=(0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2,
                     0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.closed = Counter("souk_closed_total", "Connections closed by the server", ["code"], registry=r)
        self.loop_lag = Histogram(
            "souk_loop_lag_seconds",
            "How late the event loop ran a timer due every 100 ms (server/periodic.py: watch_lag)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )

        self._per_op: dict[str, tuple[Any, Any]] = {}
        self._media: dict[str, Any] = {}

    def op_children(self, op: str) -> tuple[Any, Any]:
        """(frames counter, latency histogram) of one op; `labels()` takes a lock and builds a
        key on every call, so the children are looked up once per op name."""
        children = self._per_op.get(op)
        if children is None:
            children = self._per_op[op] = (self.frames_in.labels(op), self.op_seconds.labels(op))
        return children

    def media_children(self, stat: str) -> Any:
        """The gauge of one media stat (cached like op_children)."""
        child = self._media.get(stat)
        if child is None:
            child = self._media[stat] = self.media.labels(stat)
        return child

    def refresh(self, fanout: FanoutStats, rooms: int, media: Mapping[str, int] | None,
                edge_pulls: tuple[int, int] | None, first_keyframe_ms: Iterable[float] = ()) -> None:
        """The gauges read at scrape time: the hub's counters, the rooms in memory, the media
        relay's counters and (in a cluster) the edge pulls started and ended; and the media
        joins measured since the last scrape (watch to first keyframe packet sent)."""
        self.events.set(fanout.events)
        self.writes.set(fanout.writes)
        self.dropped.set(fanout.dropped)
        self.overflows.set(fanout.overflows)
        self.rooms.set(rooms)
        for key, value in (media or {}).items():
            self.media_children(key).set(value)
        if edge_pulls is not None:
            self.media_children("edge_pulls_started_total").set(edge_pulls[0])
            self.media_children("edge_pulls_ended_total").set(edge_pulls[1])
        for ms in first_keyframe_ms:
            self.media_first_keyframe.observe(ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
