"""What clients hand the relay, checked: ids, SDP offers, trickled ICE candidates.

Written for hostile input: every refusal is a :class:`MediaError` with the ``invalid`` code
and a message a client can act on, never an exception from deep inside aiortc.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription, candidate_from_sdp

from client_sdk.protocol import Code
from media.errors import MediaError

MAX_SDP = 64 * 1024
MAX_ID = 128
KINDS = ("audio", "video")


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or not value.isprintable():
        raise MediaError(Code.INVALID, f"{what} must be a printable string of 1..{MAX_ID} characters")
    return value


def offer_kinds(sdp: object) -> list[str]:
    """Validate an SDP offer from a client and return the kinds of its m-sections in order."""
    if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
        raise MediaError(Code.INVALID, f"sdp must be a non-empty string of at most {MAX_SDP} bytes")
    if not sdp.startswith("v=0"):
        raise MediaError(Code.INVALID, "sdp is not a session description")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # hostile input: the parser raises whatever it trips on
        raise MediaError(Code.INVALID, "sdp could not be parsed") from exc
    kinds = [m.kind for m in parsed.media]
    if any(k not in KINDS for k in kinds):
        raise MediaError(Code.INVALID, "only audio and video m-sections are relayed")
    if not kinds or any(kinds.count(k) > 1 for k in KINDS):
        raise MediaError(Code.INVALID, "the offer needs at most one audio and one video m-section")
    return kinds


async def answer(pc: RTCPeerConnection, offer_sdp: str) -> str:
    """Apply a client's offer and return the answer's SDP."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except MediaError:
        raise
    except Exception as exc:  # aiortc raises several types on offers it cannot answer
        raise MediaError(Code.INVALID, f"cannot answer this offer: {exc}") from exc
    return str(pc.localDescription.sdp)


def check_candidate(candidate: object) -> dict[str, Any]:
    """A trickled candidate in ``RTCIceCandidate.toJSON()`` shape, checked field by field."""
    if not isinstance(candidate, dict):
        raise MediaError(Code.INVALID, "candidate must be a map")
    line = candidate.get("candidate")
    mid = candidate.get("sdpMid")
    index = candidate.get("sdpMLineIndex")
    if not isinstance(line, str) or len(line) > 512:
        raise MediaError(Code.INVALID, "candidate.candidate must be a string of at most 512 bytes")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
        raise MediaError(Code.INVALID, "candidate.sdpMid must be a short string")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 16
    ):
        raise MediaError(Code.INVALID, "candidate.sdpMLineIndex must be a small integer")
    if mid is None and index is None:
        raise MediaError(Code.INVALID, "candidate needs sdpMid or sdpMLineIndex")
    return {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index}


async def add_candidate(pc: RTCPeerConnection, candidate: dict[str, Any]) -> None:
    """Add a checked candidate to ``pc``; an empty ``candidate`` string ends the candidates."""
    line: str = candidate["candidate"]
    if not line:
        await pc.addIceCandidate(None)
        return
    text = line[len("candidate:") :] if line.startswith("candidate:") else line
    try:
        parsed: RTCIceCandidate = candidate_from_sdp(text)
    except Exception as exc:
        raise MediaError(Code.INVALID, "candidate could not be parsed") from exc
    parsed.sdpMid = candidate["sdpMid"]
    parsed.sdpMLineIndex = candidate["sdpMLineIndex"]
    try:
        await pc.addIceCandidate(parsed)
    except Exception as exc:
        raise MediaError(Code.INVALID, f"candidate rejected: {exc}") from exc
