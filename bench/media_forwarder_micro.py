"""Micro-benchmark of the forwarder's fan-out step: CPU per packet per viewer, nothing else.

Real SRTP sessions (pylibsrtp) and real uvloop UDP transports on 127.0.0.1, as aioice makes
them (sending to a socket nobody reads: the kernel still does the send), no ICE/DTLS and no
other processes: the intrinsic per-viewer cost of ``StreamForwarder.forward``.

    python bench/media_forwarder_micro.py [viewers] [packets]

For a count that does not depend on the machine's load, run it under callgrind and divide
the instructions of ``forward`` by packets x viewers (user space only: the kernel's share of
``sendto`` is not counted, which is what a change to the Python path can save):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/fwd.out \\
        python bench/media_forwarder_micro.py 50 300
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylibsrtp._binding as binding
import uvloop
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import HeaderExtensionsMap
from pylibsrtp import Policy, Session

from media import hooks
from media.forwarder import StreamForwarder, ViewerState, ViewerStream
from media.packet import MediaPacket


async def main(viewers: int, packets: int) -> None:
    loop = asyncio.get_running_loop()
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
    forwarder = StreamForwarder("video", codec, lambda: None)
    forwarder.attach_source(1)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    addr = sink.getsockname()
    keyframe = MediaPacket(0, 0, 1, b"\x10\x00\x00" + os.urandom(1000), keyframe=True)
    forwarder.forward(keyframe)  # a cached keyframe, so the viewers can start
    transports = []
    for i in range(viewers):
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        session = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        stream = ViewerStream(None, 97, "1", 3000)  # type: ignore[arg-type]
        stream.outlet = hooks.Outlet(
            ctx=session._srtp[0], cdata=session._cdata, buffer=session._buffer,
            length=binding.ffi.new("int *"), protect_rtcp=session.protect_rtcp,
            sendto=transport.sendto, addr=addr, ssrc=1000 + i, extensions=HeaderExtensionsMap(),
        )
        stream.state = ViewerState.STARTING
        forwarder.add_viewer(stream)
    payload = b"\x10\x00" + os.urandom(1100)  # a full-size VP8 packet
    source = [
        MediaPacket(i & 0xFFFF, (i // 5 + 1) * 3000, int(i % 5 == 4), payload)
        for i in range(1, packets + 1)
    ]
    forwarder.forward(source[0])  # every viewer starts (keyframe burst), then goes live
    assert forwarder.live_count() == viewers
    t0 = time.process_time()
    for p in source[1:]:
        forwarder.forward(p)
    cpu = time.process_time() - t0
    per = cpu / ((packets - 1) * viewers) * 1e6
    for t in transports:
        t.close()
    print(
        f"{viewers} viewers x {packets} packets: {per:.2f} us per packet per viewer; at 200 "
        f"packets/s (1.4 Mbit/s VP8 + Opus): {per * 200 / 1e4:.3f} % of a core per viewer"
    )


if __name__ == "__main__":
    uvloop.run(main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200,
        int(sys.argv[2]) if len(sys.argv) > 2 else 2000,
    ))
