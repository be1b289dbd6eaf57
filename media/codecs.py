"""Which codecs the relay forwards, and how a viewer is made to use the publisher's.

The relay never transcodes, so a viewer must receive exactly the codec the publisher sends.
aiortc fixes a transceiver's codecs inside ``setRemoteDescription``; the preferences built
here are therefore set on the viewer's transceivers *before* its offer is applied.
"""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

# mime types (lower case) the relay accepts from publishers, per kind
FORWARDED: dict[str, tuple[str, ...]] = {
    "audio": ("audio/opus",),
    "video": ("video/vp8", "video/h264"),
}


def _same_codec(
    capability: RTCRtpCodecCapability | RTCRtpCodecParameters, codec: RTCRtpCodecParameters
) -> bool:
    if capability.mimeType.lower() != codec.mimeType.lower():
        return False
    if codec.mimeType.lower() == "video/h264":
        # an H.264 decoder set up for one profile/packetization may reject another
        mine, theirs = capability.parameters, codec.parameters
        return str(mine.get("profile-level-id")) == str(theirs.get("profile-level-id")) and str(
            mine.get("packetization-mode")
        ) == str(theirs.get("packetization-mode"))
    return True


def publisher_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities restricted to the forwarded codecs (+ RTX for video)."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    wanted = FORWARDED.get(kind, ())
    out = [c for c in caps if c.mimeType.lower() in wanted]
    out += [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    return out


def preferences_like(kind: str, codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """Only the codec the publisher negotiated (+ RTX for video, which carries our repairs)."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    out = [c for c in caps if _same_codec(c, codec)]
    out += [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    return out


def same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    return _same_codec(a, b)


def is_forwarded(codec: RTCRtpCodecParameters) -> bool:
    kind = codec.mimeType.split("/", 1)[0].lower()
    return codec.mimeType.lower() in FORWARDED.get(kind, ())


def rtx_payload_type(codecs: list[RTCRtpCodecParameters]) -> int | None:
    """The RTX payload type that repairs the primary codec (codecs[0]), if negotiated."""
    if not codecs:
        return None
    primary = codecs[0].payloadType
    for codec in codecs:
        if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") == primary:
            return codec.payloadType
    return None
