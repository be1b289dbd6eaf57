"""Sans-I/O pieces of the relay: keyframe detection and cache, PLI throttle, NACK history,
TURN credentials, stamp encoding."""

from __future__ import annotations

import base64
import fractions
import hashlib
import hmac

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from media.errors import MediaError
from media.ice import client_ice_servers, turn_credentials, validate_host, validate_urls
from media.keyframes import KeyframeCache, PliThrottle, is_keyframe_start
from media.nack import SentHistory
from media.testing.stamp import StampedVideoTrack, draw, encode_bits, latency_ms, read_stamp


def _frames(n: int) -> list[av.VideoFrame]:
    out = []
    for i in range(n):
        frame = av.VideoFrame(320, 240, "yuv420p")
        draw(frame, 1_700_000_000_000 + i * 33, i)
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        out.append(frame)
    return out


@pytest.mark.parametrize("encoder_cls,name", [(Vp8Encoder, "VP8"), (H264Encoder, "H264")])
def test_keyframe_start_is_detected_in_real_encoder_output(encoder_cls: type, name: str) -> None:
    encoder = encoder_cls()
    frames = _frames(4)
    first, _ = encoder.encode(frames[0], force_keyframe=True)
    assert is_keyframe_start(name, first[0])
    assert not any(is_keyframe_start(name, p) for p in first[1:])
    delta, _ = encoder.encode(frames[1], force_keyframe=False)
    assert not any(is_keyframe_start(name, p) for p in delta)
    forced, _ = encoder.encode(frames[2], force_keyframe=True)
    assert is_keyframe_start(name, forced[0])


def test_keyframe_start_rejects_junk() -> None:
    for junk in (b"", b"\x00", b"\xff" * 3, b"\x90\x80"):
        assert not is_keyframe_start("VP8", junk)
        assert not is_keyframe_start("H264", junk)
    assert not is_keyframe_start("opus", b"\x00\x00")


def test_keyframe_cache_keeps_only_complete_keyframes() -> None:
    cache = KeyframeCache()
    cache.add(10, 900, False, True, "k1")
    cache.add(11, 900, False, False, "k2")
    assert cache.latest() == ()  # not complete yet
    cache.add(12, 900, True, False, "k3")
    assert cache.latest() == ("k1", "k2", "k3")
    assert cache.timestamp == 900
    # delta frames do not touch it
    cache.add(13, 3900, True, False, "d")
    assert cache.latest() == ("k1", "k2", "k3")
    # a keyframe with a gap is abandoned, the previous one stays
    cache.add(14, 6900, False, True, "x1")
    cache.add(16, 6900, True, False, "x3")
    assert cache.latest() == ("k1", "k2", "k3")
    # a newer complete keyframe replaces it
    cache.add(0xFFFF, 9900, False, True, "n1")
    cache.add(0, 9900, True, False, "n2")  # across the wrap
    assert cache.latest() == ("n1", "n2")
    cache.clear()
    assert cache.latest() == ()


def test_keyframe_cache_is_bounded() -> None:
    cache = KeyframeCache(max_packets=4)
    cache.add(0, 1, False, True, 0)
    for seq in range(1, 10):
        cache.add(seq, 1, seq == 9, False, seq)
    assert cache.latest() == ()


def test_pli_throttle_coalesces_requests() -> None:
    throttle = PliThrottle(interval_ms=500)
    assert throttle.request(1000)
    assert not throttle.request(1100)
    assert not throttle.request(1400)
    assert not throttle.due(1499)
    assert throttle.due(1500)  # the coalesced request goes out once
    assert not throttle.due(2500)
    assert throttle.request(2001)
    assert (throttle.requested, throttle.sent) == (4, 3)


def test_sent_history_ring() -> None:
    history: SentHistory[str] = SentHistory(size=4)
    for seq in (65534, 65535, 0, 1):
        history.record(seq, f"p{seq}", seq * 10)
    assert history.lookup(65535) == ("p65535", 655350)
    assert history.lookup(1) == ("p1", 10)
    history.record(2, "p2", 20)  # evicts 65534 (same slot)
    assert history.lookup(65534) is None
    assert history.lookup(3) is None
    assert history.lookup(-1) is None
    assert history.lookup(70000) is None
    with pytest.raises(ValueError):
        SentHistory(size=0)


def test_turn_credentials_follow_coturn_rest_scheme() -> None:
    username, credential = turn_credentials("s3cret", "alice", now_ms=1_700_000_000_500, ttl_s=600)
    assert username == "1700000600:alice"
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest())
    assert credential == expected.decode()


def test_client_ice_servers() -> None:
    assert client_ice_servers((), (), None, "u", 0) == []
    servers = client_ice_servers(
        ("stun:stun.example.org:3478",),
        ("turn:turn.example.org:3478?transport=udp",),
        "k",
        "bob",
        0,
    )
    assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
    assert servers[1]["urls"] == ["turn:turn.example.org:3478?transport=udp"]
    assert servers[1]["username"].endswith(":bob")
    # TURN without a secret hands out nothing rather than unusable credentials
    assert client_ice_servers((), ("turn:t:3478",), None, "bob", 0) == []


def test_ice_validation() -> None:
    assert validate_host("127.0.0.1") == "127.0.0.1"
    with pytest.raises(MediaError) as err:
        validate_host("example.org")
    assert err.value.code == "invalid"
    with pytest.raises(MediaError):
        validate_urls(["http://x"], "stun")
    with pytest.raises(MediaError):
        validate_urls(["stun:x"], "turn")


@pytest.mark.parametrize("codec", ["libvpx", "libx264"])
def test_stamp_survives_lossy_compression(codec: str) -> None:
    """The stamp is read back exactly from frames encoded at a low bitrate and decoded."""
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.bit_rate = 150_000
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.framerate = fractions.Fraction(30, 1)
    decoder = av.CodecContext.create("vp8" if codec == "libvpx" else "h264", "r")
    frames = _frames(8)
    packets = [p for f in frames for p in encoder.encode(f)] + list(encoder.encode(None))
    decoded = [d for p in packets for d in decoder.decode(p)] + list(decoder.decode(None))
    stamps = [read_stamp(d) for d in decoded]
    # the stamp is the wall-clock ms modulo 2**40 (34 years): latency_ms() handles the wrap
    assert stamps == [(1_700_000_000_000 + i * 33) % 2**40 for i in range(8)]


def test_stamp_round_trip_and_checksum() -> None:
    bits = encode_bits(123_456_789)
    assert len(bits) == 48
    frame = av.VideoFrame(320, 240, "yuv420p")
    draw(frame, 123_456_789, 0)
    assert read_stamp(frame) == 123_456_789
    blank = av.VideoFrame(320, 240, "yuv420p")
    for plane in blank.planes:
        plane.update(b"\x80" * plane.buffer_size)
    assert read_stamp(blank) is None
    assert latency_ms(1000, 1040) == 40
    assert StampedVideoTrack(fps=30).kind == "video"


@pytest.mark.parametrize("level", [None, (True, 42), (False, 0)])
@pytest.mark.parametrize("marker", [0, 1])
@pytest.mark.parametrize("ids", [(), (1, 3, 4), (2, 14, 5)])
def test_header_layout_matches_aiortc_serialization(
    level: tuple[bool, int] | None, marker: int, ids: tuple[int, ...]
) -> None:
    """The forwarder's prebuilt header is byte for byte what aiortc would serialize, with
    whichever extension ids the viewer negotiated (none, the usual ones, others)."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from media.forwarder import HeaderLayout, abs_send_time

    uris = (
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    )
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in zip(ids, uris, strict=False)
    ]))
    value = abs_send_time(1_700_000_000.25)
    built = HeaderLayout(111, "0", extensions, level is not None).build(
        marker, value, level, b"payload"
    )
    reference = RtpPacket(payload_type=111, marker=marker, payload=b"payload")
    reference.extensions.mid = "0"
    reference.extensions.abs_send_time = value
    if level is not None:
        reference.extensions.audio_level = level
    assert built == reference.serialize(extensions)
