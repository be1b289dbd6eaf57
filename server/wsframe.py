"""Pre-serialized websocket frames: encode an event once, write the same bytes to every viewer.

Server-to-client frames are never masked and we negotiate no compression, so one serialized
frame is valid on every connection of the same encoding. Writing it straight to each
transport makes the per-recipient cost the kernel write and nothing else.
"""

from __future__ import annotations

import struct

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, Frame, encode

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode


def serialize(payload: bytes, binary: bool) -> bytes:
    """Wrap an encoded payload in one unmasked, unfragmented websocket frame."""
    head = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", head, n) + payload
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload


def frame_bytes(frame: Frame, subprotocol: str) -> bytes:
    """Encode a protocol frame and wrap it for the wire in one step."""
    return serialize(encode(frame, subprotocol), subprotocol == SUBPROTOCOL_MSGPACK)
