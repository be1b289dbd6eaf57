"""RTCP sender reports for every viewer of a process, from one timer.

aiortc runs one RTCP task per sender: with audio and video that is two tasks per viewer,
each waking every 0.5-1.5 s to build its report through aiortc's RTCP classes. A relay with
hundreds of viewers spends a visible share of a core on those wake-ups alone. Here the
senders' own tasks are parked (``hooks.park_rtcp``) and one timer sends each viewer one
compound SRTCP packet per interval (a sender report per stream, one SDES with their CNAMEs),
built with ``struct``: the viewers are spread over ``slices`` ticks, so the timer never sends
a burst to everybody at once.

What a report says (RFC 3550 §6.4.1): the wall-clock time of the stream's last sent packet
with that packet's RTP timestamp (the mapping a receiver uses for lip sync, as aiortc
reports it), and the packets and payload octets sent to this viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from media import hooks

log = logging.getLogger(__name__)

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_SR = struct.Struct("!BBHIIIIII")  # header, SSRC, NTP sec, NTP frac, RTP ts, packets, octets
_SDES_HEADER = struct.Struct("!BBH")
RTCP_SR = 200
RTCP_SDES = 202
CNAME = 1

Report = Callable[[], tuple[float, int, int, int]]
"""Returns (last send time.time(), last RTP timestamp, packets, octets) for one stream."""


def ntp_time(unix_s: float) -> tuple[int, int]:
    """``unix_s`` as NTP seconds and fraction (32 bits each)."""
    seconds = int(unix_s)
    fraction = int((unix_s - seconds) * (1 << 32)) & 0xFFFFFFFF
    return (seconds + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, fraction


def sender_report(ssrc: int, unix_s: float, rtp_ts: int, packets: int, octets: int) -> bytes:
    """One RTCP SR packet with no report blocks (the relay receives nothing from viewers)."""
    sec, frac = ntp_time(unix_s)
    return _SR.pack(
        0x80, RTCP_SR, 6, ssrc, sec, frac, rtp_ts & 0xFFFFFFFF, packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )


def source_description(chunks: list[tuple[int, str]]) -> bytes:
    """One RTCP SDES packet giving each SSRC its CNAME."""
    body = bytearray()
    for ssrc, cname in chunks:
        text = cname.encode()[:255]
        chunk = struct.pack("!IBB", ssrc, CNAME, len(text)) + text + b"\x00"
        chunk += b"\x00" * (-len(chunk) % 4)
        body += chunk
    return _SDES_HEADER.pack(0x80 | len(chunks), RTCP_SDES, len(body) // 4) + bytes(body)


class Reported(Protocol):
    """What the timer reads of a viewer's stream (``media.forwarder.ViewerStream``)."""

    sender: Any  # RTCRtpSender
    outlet: hooks.Outlet | None


@dataclass(eq=False)
class _Stream:
    stream: Reported
    report: Report
    cname: str | None = None


@dataclass(eq=False)
class _Viewer:
    streams: list[_Stream] = field(default_factory=list)


class SenderReports:
    """The one RTCP timer of a process's viewers."""

    def __init__(self, interval_s: float = 1.0, slices: int = 5) -> None:
        self.interval_s = interval_s
        self.slices: list[dict[object, _Viewer]] = [{} for _ in range(slices)]
        self.sent = 0
        self._tick = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, key: object, streams: list[tuple[Reported, Report]]) -> None:
        """Report on ``streams`` (stream, report function) of one viewer from now on."""
        viewer = _Viewer([_Stream(stream, report) for stream, report in streams])
        min(self.slices, key=len)[key] = viewer
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, key: object) -> None:
        for part in self.slices:
            part.pop(key, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        pause = self.interval_s / len(self.slices)
        while True:
            await asyncio.sleep(pause)
            self._send_slice(self.slices[self._tick % len(self.slices)])
            self._tick += 1

    def _send_slice(self, part: dict[object, _Viewer]) -> None:
        # a function of its own: the sleeping loop holds no reference to a viewer
        for viewer in list(part.values()):
            try:
                self._send(viewer)
            except Exception:  # a viewer going away mid-report: unwatch cleans up
                log.debug("sender report failed", exc_info=True)

    def _send(self, viewer: _Viewer) -> None:
        # streams sharing a transport (BUNDLE: all of them) share one compound packet
        by_transport: dict[Any, tuple[hooks.Outlet, list[bytes], list[tuple[int, str]]]] = {}
        for stream in viewer.streams:
            outlet = stream.stream.outlet
            if outlet is None:
                continue
            sent_at, rtp_ts, packets, octets = stream.report()
            if not packets:
                continue
            if stream.cname is None:
                stream.cname = hooks.rtcp_cname(stream.stream.sender)
            entry = by_transport.setdefault(outlet.ctx, (outlet, [], []))
            entry[1].append(sender_report(outlet.ssrc, sent_at, rtp_ts, packets, octets))
            if stream.cname:
                entry[2].append((outlet.ssrc, stream.cname))
        for outlet, reports, names in by_transport.values():
            compound = b"".join(reports)
            if names:
                compound += source_description(names)
            outlet.sendto(outlet.protect_rtcp(compound), outlet.addr)
            self.sent += 1
