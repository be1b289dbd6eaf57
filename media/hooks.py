"""Every access to aiortc/aioice private internals, in one place, pinned to tested releases.

Why this module exists: aiortc has no public API for encoded media. It decodes every received
frame and re-encodes it per sender, which costs ~11 % of a core per viewer. A forwarding relay
needs four things aiortc does not expose:

1. the publisher's RTP packets before the jitter buffer and decoder (wrap the receiver
   instance's ``_handle_rtp_packet``), and no decoder thread behind it;
2. a viewer's SRTP context and nominated ICE pair, to protect and ``sendto`` a rewritten
   packet synchronously (``RTCDtlsTransport._tx_srtp``, aioice ``Connection._nominated`` and
   the pair's ``protocol.transport`` and ``remote_addr``, the sender's ``_ssrc``);
3. the viewer's NACK and PLI/FIR feedback (``RTCRtpSender._retransmit`` /
   ``_send_keyframe``), and the sender's name-mangled SR counters so its RTCP sender reports
   describe what we forwarded;
4. the host candidate address (aioice's module-level ``get_host_addresses``).

Every hook is installed per instance (never a class or module patch), except the host pin,
which aioice only offers module-wide; it is reference counted and reversible. Each accessor
reads the attribute through :func:`require`, which raises :class:`HookError` naming it, and
``tests/media/test_media_hooks.py`` exercises each of them, so an aiortc or aioice upgrade that
renames any of them fails loudly in the test suite instead of silently disabling forwarding.
Hooks that only test peers need (loss injection, cheap sink viewers) live in
``media.testing.hooks``, on the same guard.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice
import aioice.ice
import aiortc
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

log = logging.getLogger(__name__)

TESTED_AIORTC = "1.16."
TESTED_AIOICE = "0.13."


class HookError(RuntimeError):
    """An aiortc/aioice internal the relay depends on is missing or changed shape."""


def aiortc_version_supported(version: str = aiortc.__version__) -> bool:
    """True for the aiortc release line the hooks were written and tested against."""
    return version.startswith(TESTED_AIORTC)


def aioice_version_supported(version: str = aioice.__version__) -> bool:
    """True for the aioice release line the hooks were written and tested against."""
    return version.startswith(TESTED_AIOICE)


for _name, _found, _ok, _tested in (
    ("aiortc", aiortc.__version__, aiortc_version_supported(), TESTED_AIORTC),
    ("aioice", aioice.__version__, aioice_version_supported(), TESTED_AIOICE),
):
    if not _ok:  # pragma: no cover - only on an untested upgrade
        warnings.warn(
            f"media.hooks was tested with {_name} {_tested}x, found {_found}; "
            "run tests/media/test_media_hooks.py before trusting the relay",
            RuntimeWarning,
            stacklevel=1,
        )


def require(obj: object, name: str) -> Any:
    """``getattr(obj, name)``, or a HookError naming the attribute and the versions."""
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise HookError(
            f"{type(obj).__name__}.{name} is gone (aiortc {aiortc.__version__}, "
            f"aioice {aioice.__version__}); media/hooks.py needs updating"
        ) from exc


# --------------------------------------------------------------------------- receive side

RtpTap = Callable[[RtpPacket], None]


def tap_rtp(receiver: RTCRtpReceiver, tap: RtpTap) -> None:
    """Call ``tap(packet)`` for every RTP packet this receiver gets, before aiortc's handler.

    aiortc's own handler still runs after the tap: it keeps sending NACKs, receiver reports
    and REMB to the publisher, so the uplink stays repaired by aiortc.
    """
    original: Callable[[RtpPacket, int], Awaitable[None]] = require(receiver, "_handle_rtp_packet")

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
    original: Callable[[Any], Awaitable[None]] = require(receiver, "receive")
    stop: Callable[[], None] = require(receiver, "_RTCRtpReceiver__stop_decoder")

    async def receive(parameters: Any) -> None:
        await original(parameters)
        stop()

    receiver.receive = receive  # type: ignore[method-assign]


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Awaitable[None]:
    """Ask the publisher for a keyframe (RTCP PLI addressed to ``media_ssrc``)."""
    send: Callable[[int], Awaitable[None]] = require(receiver, "_send_rtcp_pli")
    return send(media_ssrc)


# --------------------------------------------------------------------------- negotiation


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs aiortc settled on in setRemoteDescription, primary codec first."""
    codecs: list[RTCRtpCodecParameters] = require(transceiver, "_codecs")
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
    srtp = require(dtls, "_tx_srtp")
    if srtp is None:
        return None
    connection = require(dtls.transport, "_connection")
    nominated: dict[int, Any] = require(connection, "_nominated")
    pair = nominated.get(1)
    if pair is None:
        return None
    udp = require(require(pair, "protocol"), "transport")
    if udp is None:
        return None
    extensions: HeaderExtensionsMap = require(dtls, "_rtp_header_extensions_map")
    return Outlet(
        protect=srtp.protect,
        sendto=udp.sendto,
        addr=require(pair, "remote_addr"),
        ssrc=require(sender, "_ssrc"),
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
    require(sender, "_retransmit")
    require(sender, "_send_keyframe")
    check_sender_report_fields(sender)  # record_sent writes them blind: check them once here

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
        require(sender, name)


def record_sent(
    sender: RTCRtpSender, ntp: int, rtp_timestamp: int, packets: int, octets: int
) -> None:
    """Feed the sender's RTCP SR loop: aiortc builds SRs from these name-mangled fields.

    ``packets`` and ``octets`` are totals (not increments), so callers may update sparsely.
    """
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]


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
            cls._original = require(aioice.ice, "get_host_addresses")

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
