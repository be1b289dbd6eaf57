"""Every access to aiortc/aioice private internals, in one place, pinned to aiortc 1.16.x.

Why this module exists: aiortc has no public API for encoded media. It decodes every received
frame and re-encodes it per sender, which costs ~11 % of a core per viewer. A forwarding relay
needs four things aiortc does not expose:

1. the publisher's RTP packets before the jitter buffer and decoder (wrap the receiver
   instance's ``_handle_rtp_packet``), and no decoder thread behind it;
2. a viewer's SRTP context and nominated ICE pair, to protect and ``sendto`` a rewritten
   packet synchronously (``RTCDtlsTransport._tx_srtp``, aioice ``Connection._nominated``);
3. the viewer's NACK and PLI/FIR feedback (``RTCRtpSender._retransmit`` /
   ``_send_keyframe``), and the sender's name-mangled SR counters so its RTCP sender reports
   describe what we forwarded;
4. the host candidate address (aioice's module-level ``get_host_addresses``).

Every hook is installed per instance (never a class or module patch), except the host pin,
which aioice only offers module-wide; it is reference counted and reversible. Each accessor
checks the attribute exists and raises :class:`HookError` otherwise, and
``tests/media/test_hooks.py`` exercises each of them, so an aiortc upgrade that renames any of
them fails loudly in the test suite instead of silently disabling forwarding.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

log = logging.getLogger(__name__)

TESTED_AIORTC = "1.16."


class HookError(RuntimeError):
    """An aiortc/aioice internal the relay depends on is missing or changed shape."""


def aiortc_version_supported(version: str = aiortc.__version__) -> bool:
    """True for the aiortc release line the hooks were written and tested against."""
    return version.startswith(TESTED_AIORTC)


if not aiortc_version_supported():  # pragma: no cover - only on an untested upgrade
    warnings.warn(
        f"media.hooks was tested with aiortc {TESTED_AIORTC}x, found {aiortc.__version__}; "
        "run tests/media/test_hooks.py before trusting the relay",
        RuntimeWarning,
        stacklevel=1,
    )


def _require(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise HookError(
            f"{type(obj).__name__}.{name} is gone (aiortc {aiortc.__version__}); "
            "media/hooks.py needs updating"
        ) from exc


# --------------------------------------------------------------------------- receive side

RtpTap = Callable[[RtpPacket], None]


def tap_rtp(receiver: RTCRtpReceiver, tap: RtpTap) -> None:
    """Call ``tap(packet)`` for every RTP packet this receiver gets, before aiortc's handler.

    aiortc's own handler still runs after the tap: it keeps sending NACKs, receiver reports
    and REMB to the publisher, so the uplink stays repaired by aiortc.
    """
    original: Callable[[RtpPacket, int], Awaitable[None]] = _require(receiver, "_handle_rtp_packet")

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        try:
            tap(packet)
        except Exception:
            # an exception here would end aiortc's DTLS receive loop: the publisher's whole
            # connection. Log it and keep the uplink alive.
            log.exception("RTP tap failed")
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def skip_decoding(receiver: RTCRtpReceiver) -> None:
    """Stop this receiver's decoder thread as soon as aiortc starts it.

    The relay forwards packets; decoding the publisher's video would cost a core for nothing.
    Once the thread is stopped aiortc's handler still reassembles frames (for its PLI logic)
    but no longer queues them for decoding.
    """
    original: Callable[[Any], Awaitable[None]] = _require(receiver, "receive")
    stop: Callable[[], None] = _require(receiver, "_RTCRtpReceiver__stop_decoder")

    async def receive(parameters: Any) -> None:
        await original(parameters)
        stop()

    receiver.receive = receive  # type: ignore[method-assign]


def decoder_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's decoder thread is alive for this receiver (for tests and stats)."""
    thread = _require(receiver, "_RTCRtpReceiver__decoder_thread")
    return thread is not None and bool(thread.is_alive())


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Awaitable[None]:
    """Ask the publisher for a keyframe (RTCP PLI addressed to ``media_ssrc``)."""
    send: Callable[[int], Awaitable[None]] = _require(receiver, "_send_rtcp_pli")
    return send(media_ssrc)


# --------------------------------------------------------------------------- negotiation


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs aiortc settled on in setRemoteDescription, primary codec first."""
    codecs: list[RTCRtpCodecParameters] = _require(transceiver, "_codecs")
    return codecs


# --------------------------------------------------------------------------- send side


@dataclass(slots=True)
class Outlet:
    """What a forwarder needs to put a packet on a viewer's wire without awaiting."""

    protect: Callable[[bytes], bytes]
    sendto: Callable[[bytes, Any], None]
    addr: Any
    ssrc: int
    extensions: HeaderExtensionsMap


def outlet(sender: RTCRtpSender) -> Outlet | None:
    """The viewer's SRTP context and nominated ICE pair, or None until DTLS is up."""
    dtls = sender.transport
    srtp = _require(dtls, "_tx_srtp")
    if srtp is None:
        return None
    connection = _require(dtls.transport, "_connection")
    nominated: dict[int, Any] = _require(connection, "_nominated")
    pair = nominated.get(1)
    if pair is None:
        return None
    udp = pair.protocol.transport
    if udp is None:
        return None
    extensions: HeaderExtensionsMap = _require(dtls, "_rtp_header_extensions_map")
    return Outlet(
        protect=srtp.protect,
        sendto=udp.sendto,
        addr=pair.remote_addr,
        ssrc=sender._ssrc,
        extensions=extensions,
    )


def intercept_feedback(
    sender: RTCRtpSender,
    on_nack: Callable[[int], None],
    on_keyframe_request: Callable[[], None],
) -> None:
    """Route this sender's NACKs and PLI/FIRs to the relay instead of aiortc's encoder path.

    aiortc would look NACKed packets up in the sender's own history (empty: the relay sends
    around it) and answer PLI by flagging an encoder that does not exist.
    """
    _require(sender, "_retransmit")
    _require(sender, "_send_keyframe")

    async def retransmit(sequence_number: int) -> None:
        on_nack(sequence_number)

    sender._retransmit = retransmit  # type: ignore[method-assign]
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]


_SR_FIELDS = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
)


def check_sender_report_fields(sender: RTCRtpSender) -> None:
    """Raise HookError unless the sender still has the counters its SR loop reports."""
    for name in _SR_FIELDS:
        _require(sender, name)


def record_sent(sender: RTCRtpSender, ntp: int, rtp_timestamp: int, payload_len: int) -> None:
    """Feed the sender's RTCP SR loop: aiortc builds SRs from these name-mangled fields."""
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count += 1  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count += payload_len  # type: ignore[attr-defined]


def sent_packet_count(sender: RTCRtpSender) -> int:
    """The SR packet counter (for tests of :func:`record_sent`)."""
    count: int = _require(sender, "_RTCRtpSender__packet_count")
    return count


# --------------------------------------------------------------------------- host candidates


class HostPin:
    """Make aioice offer exactly one host candidate address (``--rtc-host``).

    aioice reads the host addresses from a module-level function and never offers loopback.
    The pin replaces that function while at least one holder needs it and restores the
    original when the last releases it. Two holders wanting different addresses in one
    process is a configuration error.
    """

    _original: Callable[[bool, bool], list[str]] | None = None
    _address: str | None = None
    _holders = 0

    @classmethod
    def acquire(cls, address: str) -> None:
        if cls._holders and cls._address != address:
            raise HookError(f"host candidates already pinned to {cls._address}, not {address}")
        if not cls._holders:
            cls._original = _require(aioice.ice, "get_host_addresses")

            def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
                is_v6 = ":" in address
                return [address] if (use_ipv6 if is_v6 else use_ipv4) else []

            aioice.ice.get_host_addresses = host_addresses
            cls._address = address
        cls._holders += 1

    @classmethod
    def release(cls) -> None:
        if not cls._holders:
            return
        cls._holders -= 1
        if not cls._holders and cls._original is not None:
            aioice.ice.get_host_addresses = cls._original  # type: ignore[assignment]
            cls._original = None
            cls._address = None

    @classmethod
    def pinned(cls) -> str | None:
        return cls._address


# --------------------------------------------------------------------------- test peers

RtpFilter = Callable[[bytes], bool]


def filter_incoming_rtp(dtls: Any, keep: RtpFilter) -> None:
    """Call ``keep(decrypted_rtp)`` on every RTP datagram a peer receives; False drops it.

    Used by media.testing only: loss injection between relay and one viewer (tc netem is not
    available), and the benchmark's non-decoding sink viewers (count, then drop).
    """
    original: Callable[[bytes, int], Awaitable[None]] = _require(dtls, "_handle_rtp_data")

    async def handle(data: bytes, arrival_time_ms: int) -> None:
        if keep(data):
            await original(data, arrival_time_ms)

    dtls._handle_rtp_data = handle


def filter_incoming_datagrams(ice_transport: Any, keep: RtpFilter) -> None:
    """Call ``keep(datagram)`` on every datagram a peer's ICE transport delivers, *before*
    DTLS/SRTP sees it; False drops it.

    This is where a lossy network loses packets: dropping after SRTP unprotect (as
    :func:`filter_incoming_rtp` does) would let SRTP replay protection reject the
    retransmission of a dropped packet, which a real network never causes.
    """
    original: Callable[[], Awaitable[bytes]] = _require(ice_transport, "_recv")

    async def recv() -> bytes:
        while True:
            data = await original()
            if keep(data):
                return data

    ice_transport._recv = recv


def ignore_keyframe_requests(sender: RTCRtpSender) -> None:
    """Make a test publisher deaf to PLI/FIR, so only its natural GOP yields keyframes."""
    _require(sender, "_send_keyframe")
    sender._send_keyframe = lambda: None  # type: ignore[method-assign]
