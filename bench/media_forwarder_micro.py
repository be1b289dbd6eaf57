"""Micro-benchmark of the forwarder's hot path: CPU per packet per viewer, nothing else.

Real SRTP contexts (pylibsrtp) and real UDP ``sendto`` on 127.0.0.1 (to a socket nobody
reads: the kernel still does the send), no ICE/DTLS and no other processes: the intrinsic
per-viewer cost, to compare with bench/media_bench.py's end-to-end figure on a busy machine.
Run: ``python bench/media_forwarder_micro.py [viewers] [packets]``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from media import hooks
from media.forwarder import StreamForwarder, ViewerState, ViewerStream


class _Sender:
    """Stands in for RTCRtpSender: only the SR counters the forwarder updates."""

    def __init__(self) -> None:
        self._RTCRtpSender__ntp_timestamp = 0
        self._RTCRtpSender__rtp_timestamp = 0
        self._RTCRtpSender__packet_count = 0
        self._RTCRtpSender__octet_count = 0


def main() -> None:
    viewers = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    packets = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
    forwarder = StreamForwarder("video", codec, 500)
    forwarder.attach_source(97, None, lambda ssrc: None)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    addr = sink.getsockname()

    def sendto(data: bytes, a: Any) -> None:
        try:
            out.sendto(data, a)
        except BlockingIOError:
            pass

    for i in range(viewers):
        policy = Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)
        stream = ViewerStream(_Sender(), 97, "1", 3000)  # type: ignore[arg-type]
        stream.outlet = hooks.Outlet(
            protect=Session(policy).protect,
            sendto=sendto,
            addr=addr,
            ssrc=1000 + i,
            extensions=HeaderExtensionsMap(),
        )
        stream.state = ViewerState.LIVE
        stream.epoch = forwarder.epoch
        forwarder.viewers.append(stream)
    payload = b"\x10\x00" + os.urandom(1100)  # a full-size VP8 packet
    source = [
        RtpPacket(
            payload_type=97,
            sequence_number=i & 0xFFFF,
            timestamp=(i // 5) * 3000,
            ssrc=42,
            payload=payload,
        )
        for i in range(packets)
    ]
    for p in source:
        p.marker = int(p.sequence_number % 5 == 4)
    t0 = time.process_time()
    for p in source:
        forwarder.on_rtp(p)
    cpu = time.process_time() - t0
    per = cpu / (packets * viewers) * 1e6
    # a ~1.2 Mbit/s VP8 stream plus Opus is ~150 packets/s
    print(
        f"{viewers} viewers x {packets} packets: {per:.2f} us per packet per viewer; "
        f"at 150 packets/s: {per * 150 / 1e4:.3f} % of a core per viewer"
    )


if __name__ == "__main__":
    main()
