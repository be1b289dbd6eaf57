"""aiortc/aioice internals that only test and load-test peers touch, on the same guard.

The relay itself never calls these: they inject loss between the relay and one viewer
(``tc netem`` is not available on the test machines), let one load-generator process host
hundreds of sink viewers, and let tests observe what the relay's hooks did. Each reads its
attribute through :func:`media.hooks.require`, so an upgrade that renames one fails with a
:class:`~media.hooks.HookError` naming it (``tests/media/test_media_hooks.py`` exercises them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from media.hooks import require

DatagramFilter = Callable[[bytes], bool]


def filter_incoming_rtp(dtls: Any, keep: DatagramFilter) -> None:
    """Call ``keep(decrypted_rtp)`` on every RTP datagram a peer receives; False drops it.

    Used to watch what arrives after SRTP (tests of the send-side hooks).
    """
    original: Callable[[bytes, int], Awaitable[None]] = require(dtls, "_handle_rtp_data")

    async def handle(data: bytes, arrival_time_ms: int) -> None:
        if keep(data):
            await original(data, arrival_time_ms)

    dtls._handle_rtp_data = handle


def filter_incoming_datagrams(ice_transport: Any, keep: DatagramFilter) -> None:
    """Call ``keep(datagram)`` on every datagram a peer's ICE transport delivers, *before*
    DTLS/SRTP sees it; False drops it.

    This is where a lossy network loses packets: dropping after SRTP unprotect (as
    :func:`filter_incoming_rtp` does) would let SRTP replay protection reject the
    retransmission of a dropped packet, which a real network never causes.
    """
    original: Callable[[], Awaitable[bytes]] = require(ice_transport, "_recv")

    async def recv() -> bytes:
        while True:
            data = await original()
            if keep(data):
                return data

    ice_transport._recv = recv


def intercept_ice_data(ice_transport: Any, keep: DatagramFilter) -> None:
    """Like :func:`filter_incoming_datagrams`, one step earlier: inside aioice's
    ``Connection.data_received``, before the datagram is queued for the DTLS task.

    A dropped datagram then costs one function call instead of a queue put, a task wake-up
    and a pass through the DTLS loop: what lets one load-generator process host hundreds of
    sink viewers.
    """
    connection = require(ice_transport, "_connection")
    original: Callable[[bytes, int], None] = require(connection, "data_received")

    def data_received(data: bytes, component: int) -> None:
        if keep(data):
            original(data, component)

    connection.data_received = data_received


def ignore_keyframe_requests(sender: RTCRtpSender) -> None:
    """Make a test publisher deaf to PLI/FIR, so only its natural GOP yields keyframes."""
    require(sender, "_send_keyframe")
    sender._send_keyframe = lambda: None  # type: ignore[method-assign]


def decoder_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's decoder thread is alive for this receiver (``skip_decoding`` stops it)."""
    thread = require(receiver, "_RTCRtpReceiver__decoder_thread")
    return thread is not None and bool(thread.is_alive())
