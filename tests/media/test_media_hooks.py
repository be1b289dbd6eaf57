"""Regression tests for media/hooks.py: every aiortc/aioice internal the relay relies on.

If an aiortc upgrade renames or reshapes one of them, a test here fails with the hook's name
(HookError or a plain assertion), instead of the relay silently forwarding nothing.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

from media import hooks
from media.forwarder import ParkedTrack
from media.testing import PublisherPeer, loopback
from media.testing import hooks as test_hooks
from media.testing.peers import wait_until

pytestmark = pytest.mark.media


@pytest.fixture
async def pinned() -> AsyncIterator[None]:
    with loopback():
        yield


async def _connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    await wait_until(
        lambda: offerer.connectionState == answerer.connectionState == "connected", 10, "connect"
    )


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def test_version_pin() -> None:
    assert hooks.aiortc_version_supported()
    assert not hooks.aiortc_version_supported("1.17.0")
    assert not hooks.aiortc_version_supported("2.0.0")
    assert hooks.aioice_version_supported()
    assert not hooks.aioice_version_supported("0.14.0")
    assert not hooks.aioice_version_supported("1.0.0")


async def test_private_attributes_exist_before_connecting() -> None:
    pc = _pc()
    try:
        t = pc.addTransceiver(ParkedTrack("video"), direction="sendonly")
        assert hooks.negotiated_codecs(t) is not None
        assert test_hooks.decoder_running(t.receiver) is False
        for name in ("_handle_rtp_packet", "_send_rtcp_pli", "_RTCRtpReceiver__stop_decoder"):
            assert callable(getattr(t.receiver, name)), name
        for name in ("_handle_rtcp_packet", "_run_rtcp", "_send_keyframe"):
            assert callable(getattr(t.sender, name)), name
        for name in ("_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited"):
            assert isinstance(getattr(t.sender, name), asyncio.Event), name
        assert hooks.rtcp_cname(t.sender) is None  # set when the sender starts
        assert callable(t.receiver.transport._handle_rtp_data)
        assert hasattr(t.receiver.transport, "_tx_srtp")
        assert hasattr(t.receiver.transport.transport, "_connection")
        assert hasattr(t.receiver.transport.transport._connection, "_nominated")
        assert len(pc._RTCPeerConnection__certificates) == 1  # type: ignore[attr-defined]
        assert callable(hooks.srtp_protect)
    finally:
        await pc.close()


def test_host_pin_is_reference_counted_and_reversible() -> None:
    original = aioice.ice.get_host_addresses
    hooks.HostPin.acquire("127.0.0.1")
    hooks.HostPin.acquire("127.0.0.1")
    try:
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == []
        with pytest.raises(hooks.HookError):
            hooks.HostPin.acquire("10.0.0.1")
        hooks.HostPin.release()
        assert hooks.HostPin.pinned() == "127.0.0.1"
    finally:
        hooks.HostPin.release()
    assert aioice.ice.get_host_addresses is original
    assert hooks.HostPin.pinned() is None


async def test_pinned_offer_has_only_the_pinned_host_candidate(pinned: None) -> None:
    pc = _pc()
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
        assert candidates
        assert all(line.split()[4] == "127.0.0.1" for line in candidates)
    finally:
        await pc.close()


async def test_receive_side_hooks_on_a_live_publisher(pinned: None) -> None:
    """tap_rtp sees the publisher's packets, skip_decoding stops the decoder, send_pli
    reaches the publisher's sender (observed through intercept_feedback)."""
    publisher = PublisherPeer(audio=False, fps=20)
    receiver_pc = _pc()
    seen: list[RtpPacket] = []
    plis: list[int] = []
    try:
        hooks.intercept_feedback(publisher.video_sender, lambda seq: None, lambda: plis.append(1))
        offer = await publisher.offer()
        await receiver_pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        transceiver = receiver_pc.getTransceivers()[0]
        hooks.skip_decoding(transceiver.receiver)
        hooks.tap_rtp(transceiver.receiver, seen.append)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await publisher.accept(receiver_pc.localDescription.sdp)
        await wait_until(lambda: len(seen) > 10, 10, "tapped RTP packets")
        assert not test_hooks.decoder_running(transceiver.receiver)
        pt = hooks.negotiated_codecs(transceiver)[0].payloadType
        media = [p for p in seen if p.payload_type == pt]
        assert media, "tap saw no packets of the negotiated codec"
        await hooks.send_pli(transceiver.receiver, media[-1].ssrc)
        await wait_until(lambda: bool(plis), 5, "PLI at the publisher")
    finally:
        await publisher.close()
        await receiver_pc.close()


async def test_send_side_hooks_outlet_feedback_and_parked_rtcp(pinned: None) -> None:
    """A packet protected in place through outlet() arrives decrypted at the peer; a gap
    makes the peer NACK and a PLI from it arrives, both through intercept_feedback; the
    parked RTCP task sends no sender report of its own; rtcp_cname is the answer's CNAME."""
    sender_pc, peer = _pc(), _pc()
    arrived: list[bytes] = []
    nacks: list[int] = []
    plis: list[int] = []
    reports: list[object] = []
    try:
        t = sender_pc.addTransceiver(ParkedTrack("video"), direction="sendonly")
        hooks.intercept_feedback(t.sender, nacks.append, lambda: plis.append(1))
        hooks.park_rtcp(t.sender)
        await _connect(sender_pc, peer)
        receiver = peer.getTransceivers()[0].receiver
        original = receiver._handle_rtcp_packet

        async def on_rtcp(packet: object) -> None:
            reports.append(packet)
            await original(packet)

        receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

        def keep(data: bytes) -> bool:
            arrived.append(data)
            return True

        test_hooks.filter_incoming_rtp(receiver.transport, keep)
        out = hooks.outlet(t.sender)
        assert out is not None
        assert out.ssrc == t.sender._ssrc
        pt = hooks.negotiated_codecs(t)[0].payloadType
        assert pt is not None
        for seq in (100, 101, 103, 104, 105):
            packet = RtpPacket(
                payload_type=pt, sequence_number=seq, timestamp=seq * 3000, ssrc=out.ssrc
            )
            packet.payload = b"\x10\x00" + bytes(20)
            data = packet.serialize(out.extensions)
            out.buffer[0 : len(data)] = data
            out.length[0] = len(data)
            assert hooks.srtp_protect(out.ctx, out.cdata, out.length) == 0
            out.sendto(out.buffer[0 : out.length[0]], out.addr)
            await asyncio.sleep(0.01)
        await wait_until(lambda: len(arrived) == 5, 5, "packets at the peer")
        assert struct.unpack_from("!H", arrived[0], 2)[0] == 100
        await wait_until(lambda: 102 in nacks, 5, "NACK for the gap")
        await hooks.send_pli(receiver, out.ssrc)
        await wait_until(lambda: bool(plis), 5, "PLI at the sender")
        cname = hooks.rtcp_cname(t.sender)
        assert cname and f"cname:{cname}" in sender_pc.localDescription.sdp
        await asyncio.sleep(1.6)  # aiortc's own task would have sent an SR by now
        assert not any(type(r).__name__ == "RtcpSrPacket" for r in reports)
    finally:
        await sender_pc.close()
        await peer.close()


async def test_lean_peers_share_one_certificate_and_build_no_idle_estimator(
    pinned: None,
) -> None:
    """While LeanPeers is held, peer connections carry the shared certificate (same
    fingerprint in every answer, one DTLS context built), both pairs connect, and a video
    receiver that never gets a packet never builds aiortc's bandwidth estimator; released,
    aiortc's own classes are back."""
    import aiortc.rtcpeerconnection
    import aiortc.rtcrtpreceiver

    original_cert = aiortc.rtcpeerconnection.RTCCertificate
    original_estimator = aiortc.rtcrtpreceiver.RemoteBitrateEstimator
    hooks.LeanPeers.acquire()
    a1, a2, b1, b2 = _pc(), _pc(), _pc(), _pc()
    try:
        shared = hooks.shared_certificate()
        for pc in (a1, a2):
            pc.addTransceiver(ParkedTrack("video"), direction="sendonly")
        await _connect(a1, b1)
        await _connect(a2, b2)
        prints = {
            line
            for pc in (a1, a2)
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=fingerprint:sha-256")
        }
        sha256 = next(f for f in shared.getFingerprints() if f.algorithm == "sha-256")
        assert prints == {f"a=fingerprint:sha-256 {sha256.value}"}
        assert len(shared._contexts) == 1
        estimator = a1.getTransceivers()[0].receiver._RTCRtpReceiver__remote_bitrate_estimator
        assert estimator._real is None  # a send-only viewer's receiver never built one
    finally:
        for pc in (a1, a2, b1, b2):
            await pc.close()
        hooks.LeanPeers.release()
    assert aiortc.rtcpeerconnection.RTCCertificate is original_cert
    assert aiortc.rtcrtpreceiver.RemoteBitrateEstimator is original_estimator
    assert not hooks.LeanPeers.held()


async def test_lazy_estimator_becomes_real_on_the_publishers_packets(pinned: None) -> None:
    """The publisher's video receiver still estimates bandwidth (and sends REMB): its lazy
    estimator builds the real one at the first packet."""
    hooks.LeanPeers.acquire()
    publisher = PublisherPeer(audio=False, fps=20)
    receiver_pc = _pc()
    try:
        offer = await publisher.offer()
        await receiver_pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        receiver = receiver_pc.getTransceivers()[0].receiver
        hooks.skip_decoding(receiver)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await publisher.accept(receiver_pc.localDescription.sdp)
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator
        await wait_until(lambda: estimator._real is not None, 10, "the real estimator")
        assert type(estimator._real).__name__ == "RemoteBitrateEstimator"
    finally:
        await publisher.close()
        await receiver_pc.close()
        hooks.LeanPeers.release()


def test_shared_certificate_is_renewed_before_it_expires() -> None:
    import datetime

    shared = hooks.shared_certificate()
    late = shared.expires - datetime.timedelta(hours=12)
    renewed = hooks.shared_certificate(now=late)
    assert renewed is not shared
    assert renewed.expires >= shared.expires
    assert hooks.shared_certificate() is renewed


async def test_filter_incoming_rtp_can_drop_everything(pinned: None) -> None:
    publisher = PublisherPeer(audio=False, fps=20)
    receiver_pc = _pc()
    tapped: list[RtpPacket] = []
    dropped: list[int] = []
    try:
        offer = await publisher.offer()
        await receiver_pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        transceiver = receiver_pc.getTransceivers()[0]
        hooks.tap_rtp(transceiver.receiver, tapped.append)
        test_hooks.filter_incoming_rtp(transceiver.receiver.transport, lambda d: bool(dropped.append(1)))
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await publisher.accept(receiver_pc.localDescription.sdp)
        await wait_until(lambda: len(dropped) > 10, 10, "RTP at the filter")
        assert tapped == []
    finally:
        await publisher.close()
        await receiver_pc.close()


def test_hook_error_names_the_missing_attribute() -> None:
    class Stub:
        transport = None

    with pytest.raises(hooks.HookError, match="_handle_rtcp_packet"):
        hooks.intercept_feedback(Stub(), lambda s: None, lambda: None)  # type: ignore[arg-type]
    assert RTCRtpSender is not None


@pytest.mark.parametrize("missing", ["_ssrc", "protocol", "transport", "remote_addr"])
def test_outlet_names_a_missing_pair_or_sender_attribute(missing: str) -> None:
    """outlet() reads the nominated pair and the sender through the guard too: an aioice
    that renames them fails with their name, not with an AttributeError mid-forwarding."""

    def stub(**attrs: object) -> object:
        return type("Stub", (), {k: v for k, v in attrs.items() if k != missing})()

    def whole(**attrs: object) -> object:  # the public parts outlet() reads directly
        return type("Stub", (), attrs)()

    udp = stub(sendto=lambda data, addr: None)
    pair = stub(protocol=stub(transport=udp), remote_addr=("127.0.0.1", 9))
    connection = stub(_nominated={1: pair})
    dtls = whole(
        _tx_srtp=whole(
            _cdata=bytearray(1500), _srtp=[object()], _buffer=bytearray(1500), protect_rtcp=bytes
        ),
        transport=whole(_connection=connection),
        _rtp_header_extensions_map=object(),
    )
    sender = whole(transport=dtls, _ssrc=1234) if missing != "_ssrc" else whole(transport=dtls)
    with pytest.raises(hooks.HookError, match=missing):
        hooks.outlet(sender)  # type: ignore[arg-type]


async def test_intercept_ice_data_sees_srtp_before_dtls(pinned: None) -> None:
    publisher = PublisherPeer(audio=False, fps=20)
    receiver_pc = _pc()
    tapped: list[RtpPacket] = []
    seen: list[bytes] = []

    def keep(data: bytes) -> bool:
        if 127 < data[0] < 192 and not 192 <= data[1] <= 223:
            seen.append(data)
            return False  # drop SRTP
        return True  # STUN, DTLS, SRTCP go on

    try:
        offer = await publisher.offer()
        await receiver_pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        transceiver = receiver_pc.getTransceivers()[0]
        hooks.tap_rtp(transceiver.receiver, tapped.append)
        test_hooks.intercept_ice_data(transceiver.receiver.transport.transport, keep)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await publisher.accept(receiver_pc.localDescription.sdp)
        await wait_until(lambda: len(seen) > 10, 10, "SRTP at the interceptor")
        assert receiver_pc.connectionState == "connected"  # DTLS still went through
        assert tapped == []
    finally:
        await publisher.close()
        await receiver_pc.close()
