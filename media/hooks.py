"""Every access to aiortc/aioice/pylibsrtp private internals, in one place, pinned to tested releases.

Why this module exists: aiortc has no public API for encoded media. It decodes every received
frame and re-encodes it per sender, which costs ~11 % of a core per viewer. A forwarding relay
needs what aiortc does not expose:

1. the publisher's RTP packets before the jitter buffer and decoder (wrap the receiver
   instance's ``_handle_rtp_packet``), and no decoder thread behind it;
2. a viewer's SRTP context and nominated ICE pair, to protect and ``sendto`` a rewritten
   packet synchronously (``RTCDtlsTransport._tx_srtp``, pylibsrtp's session buffer and
   ``srtp_protect``, aioice ``Connection._nominated`` and the pair's ``protocol.transport``
   and ``remote_addr``, the sender's ``_ssrc``);
3. the viewer's RTCP feedback (the sender's ``_handle_rtcp_packet``), and the sender's RTCP
   task parked (``_run_rtcp``) so that one timer reports for every viewer;
4. the host candidate address (aioice's module-level ``get_host_addresses``), and cheaper
   peer connections (one certificate per process, no idle bandwidth estimator).

Every hook is installed per instance (never a class or module patch), except the two pins
(:class:`HostPin`, :class:`LeanPeers`), which aioice and aiortc only allow module-wide; they
are reference counted and reversible. Each accessor reads the attribute through
:func:`require`, which raises :class:`HookError` naming it, and
``tests/media/test_media_hooks.py`` exercises each of them, so an upgrade that renames any of
them fails loudly in the test suite instead of silently disabling forwarding. Hooks that only
test peers need (loss injection, cheap sink viewers) live in ``media.testing.hooks``, on the
same guard.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice
import aioice.ice
import aiortc
import pylibsrtp
import pylibsrtp._binding as pylibsrtp_binding
from aiortc import rtcpeerconnection as aiortc_pc_module
from aiortc import rtcrtpreceiver as aiortc_receiver_module
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

log = logging.getLogger(__name__)

TESTED_AIORTC = "1.16."
TESTED_AIOICE = "0.13."
TESTED_PYLIBSRTP = "1.0."


class HookError(RuntimeError):
    """An aiortc/aioice internal the relay depends on is missing or changed shape."""


def aiortc_version_supported(version: str = aiortc.__version__) -> bool:
    """True for the aiortc release line the hooks were written and tested against."""
    return version.startswith(TESTED_AIORTC)


def aioice_version_supported(version: str = aioice.__version__) -> bool:
    """True for the aioice release line the hooks were written and tested against."""
    return version.startswith(TESTED_AIOICE)


def pylibsrtp_version_supported(version: str = pylibsrtp.__version__) -> bool:
    """True for the pylibsrtp release line whose session buffer the forwarder writes into."""
    return version.startswith(TESTED_PYLIBSRTP)


for _name, _found, _ok, _tested in (
    ("aiortc", aiortc.__version__, aiortc_version_supported(), TESTED_AIORTC),
    ("aioice", aioice.__version__, aioice_version_supported(), TESTED_AIOICE),
    ("pylibsrtp", pylibsrtp.__version__, pylibsrtp_version_supported(), TESTED_PYLIBSRTP),
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
            f"{getattr(obj, '__name__', type(obj).__name__)}.{name} is gone "
            f"(aiortc {aiortc.__version__}, aioice {aioice.__version__}, "
            f"pylibsrtp {pylibsrtp.__version__}); media/hooks.py needs updating"
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
    """What a forwarder needs to put a packet on a viewer's wire without awaiting.

    The packet is protected in place in the SRTP session's own 1500-byte buffer (``buffer``
    over ``cdata``; ``length`` is the in/out length libsrtp takes) by :data:`srtp_protect`,
    then handed to the nominated pair's socket: one copy in, one out, no Python wrapper.
    """

    ctx: Any  # libsrtp's srtp_t of the viewer's outbound session
    cdata: Any  # char[1500]
    buffer: Any  # writable buffer over cdata
    length: Any  # int *
    protect_rtcp: Callable[[bytes], bytes]
    sendto: Callable[[bytes, Any], None]
    addr: Any
    ssrc: int
    extensions: HeaderExtensionsMap


# libsrtp's srtp_protect(ctx, buffer, int *length) -> status, as pylibsrtp binds it: called
# directly, without pylibsrtp's per-call allocation and two copies.
srtp_protect: Callable[[Any, Any, Any], int] = require(pylibsrtp_binding.lib, "srtp_protect")
SRTP_BUFFER = 1500
SRTP_TRAILER = 16  # the auth tag (10) plus MKI headroom: what protect may append


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
    cdata = require(srtp, "_cdata")
    if len(cdata) < SRTP_BUFFER:  # pragma: no cover - only on a pylibsrtp change
        raise HookError(f"pylibsrtp's session buffer is {len(cdata)} bytes, not {SRTP_BUFFER}")
    return Outlet(
        ctx=require(srtp, "_srtp")[0],
        cdata=cdata,
        buffer=require(srtp, "_buffer"),
        length=pylibsrtp_binding.ffi.new("int *"),
        protect_rtcp=srtp.protect_rtcp,
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
    """Handle this sender's RTCP feedback in the relay instead of aiortc.

    NACKs go to ``on_nack`` (aiortc would look them up in the sender's own history, empty:
    the relay sends around it), PLI/FIR to ``on_keyframe_request`` (aiortc would flag an
    encoder that does not exist). Receiver reports and REMB are dropped unread: aiortc turns
    every report block into a stats object, a cost per viewer per second that nothing reads.
    """
    require(sender, "_handle_rtcp_packet")

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket):
            if packet.fmt == RTCP_RTPFB_NACK:
                for seq in packet.lost:
                    on_nack(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            on_keyframe_request()

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def park_rtcp(sender: RTCRtpSender) -> None:
    """Replace this sender's RTCP task (a wake-up every 0.5-1.5 s per viewer per stream) by
    one that only waits to be stopped: the relay sends every viewer's sender reports from
    one timer (``media.rtcp``). Call before the sender starts (before DTLS is up)."""
    require(sender, "_run_rtcp")
    started: asyncio.Event = require(sender, "_RTCRtpSender__rtcp_started")
    exited: asyncio.Event = require(sender, "_RTCRtpSender__rtcp_exited")

    async def parked() -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass
        finally:
            exited.set()

    sender._run_rtcp = parked  # type: ignore[method-assign]


def rtcp_cname(sender: RTCRtpSender) -> str | None:
    """The CNAME the answer announced for this sender (set once the sender started): sender
    reports must carry it so that the viewer ties audio and video together."""
    cname: str | None = require(sender, "_RTCRtpSender__cname")
    return cname


# --------------------------------------------------------------------------- lean peer connections


class SharedCertificate(RTCCertificate):
    """One DTLS certificate for every peer connection of a process.

    aiortc makes a key pair and a certificate per peer connection, computes its fingerprints
    for every answer and builds a fresh OpenSSL context per DTLS transport. Here all three
    are made once: a join then costs the handshake itself. The server-side session cache is
    off (aiortc disables tickets too), so the shared context holds no per-client state.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        super().__init__(key, cert)
        self._fingerprints: list[RTCDtlsFingerprint] | None = None
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        key = tuple(p.openssl_profile for p in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[key] = context
        return context


require(RTCCertificate, "_create_ssl_context")  # what SharedCertificate overrides
_shared: SharedCertificate | None = None
CERTIFICATE_RENEW_BEFORE = datetime.timedelta(days=1)
_generate_certificate = RTCCertificate.generateCertificate


def shared_certificate(now: datetime.datetime | None = None) -> SharedCertificate:
    """The process's certificate, renewed a day before it expires (aiortc's last 30 days):
    a connection keeps the certificate it was made with, new ones get the new one."""
    global _shared
    now = now or datetime.datetime.now(tz=datetime.UTC)
    if _shared is None or _shared.expires - now < CERTIFICATE_RENEW_BEFORE:
        fresh = _generate_certificate()
        _shared = SharedCertificate(require(fresh, "_key"), require(fresh, "_cert"))
    return _shared


class _PinnedCertificate(RTCCertificate):
    """What aiortc's peer connection module sees as ``RTCCertificate`` while pinned."""

    @classmethod
    def generateCertificate(cls) -> Any:
        return shared_certificate()


class _LazyEstimator:
    """aiortc's receive-side bandwidth estimator, built on the first packet it gets.

    aiortc makes one per video receiver, with a rate counter of 1,000 bucket objects: 0.5 ms
    and ~100 KiB per viewer for a receiver that a send-only viewer never uses. The
    publisher's receiver gets the real one at its first packet, and sends REMB as before.
    """

    __slots__ = ("_real",)

    def __init__(self) -> None:
        self._real: Any = None

    def add(self, *args: Any, **kwargs: Any) -> Any:
        if self._real is None:
            self._real = _remote_bitrate_estimator()
        return self._real.add(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = _remote_bitrate_estimator()
        return getattr(self._real, name)


_remote_bitrate_estimator = require(aiortc_receiver_module, "RemoteBitrateEstimator")
require(aiortc_pc_module, "RTCCertificate")


class LeanPeers:
    """While held, every aiortc peer connection of the process is cheaper to make.

    Two module-wide replacements (aiortc constructs these inside its constructors, so there
    is no instance to hook): its per-connection certificate is the process's shared one
    (:func:`shared_certificate`: one key pair, fingerprint and DTLS context for all), and the
    video receiver's bandwidth estimator is built only if a packet ever arrives
    (:class:`_LazyEstimator`). Reference counted and reversible, like :class:`HostPin`.
    """

    _holders = 0

    # (module, name, aiortc's own, the lean one)
    _SWAPS: tuple[tuple[Any, str, Any, Any], ...] = (
        (aiortc_pc_module, "RTCCertificate", RTCCertificate, _PinnedCertificate),
        (aiortc_receiver_module, "RemoteBitrateEstimator", _remote_bitrate_estimator,
         _LazyEstimator),
    )

    @classmethod
    def acquire(cls) -> None:
        if not cls._holders:
            for module, name, _, lean in cls._SWAPS:
                setattr(module, name, lean)
        cls._holders += 1

    @classmethod
    def release(cls) -> None:
        if not cls._holders:
            return
        cls._holders -= 1
        if not cls._holders:
            for module, name, original, _ in cls._SWAPS:
                setattr(module, name, original)

    @classmethod
    def held(cls) -> bool:
        return cls._holders > 0


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
