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
# {"op": "batch", "items": [...]} up to the array: what msgpack.packb / orjson.dumps write
_MSGPACK_BATCH = b"\x82\xa2op\xa5batch\xa5items"
_JSON_BATCH = b'{"op":"batch","items":['


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


def batch_payload(parts: list[bytes], subprotocol: str) -> bytes:
    """The encoding of `{"op": "batch", "items": items}` from the items' own encodings (the
    same bytes `encode` would produce)."""
    if subprotocol != SUBPROTOCOL_MSGPACK:
        return _JSON_BATCH + b",".join(parts) + b"]}"
    n = len(parts)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 65536:
        head = struct.pack("!BH", 0xDC, n)
    else:
        head = struct.pack("!BI", 0xDD, n)
    return _MSGPACK_BATCH + head + b"".join(parts)


def bounded_events(events: list[Frame], subprotocol: str, limit: int) -> bytes | None:
    """One frame carrying `events` (the event itself when alone, else a batch), or None when
    their encoding would pass `limit` bytes. It encodes event by event and stops at the limit,
    so a refusal costs at most `limit` bytes of encoding, whatever the history holds."""
    parts: list[bytes] = []
    size = 0
    for event in events:
        part = encode(event, subprotocol)
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    payload = parts[0] if len(parts) == 1 else batch_payload(parts, subprotocol)
    return serialize(payload, subprotocol == SUBPROTOCOL_MSGPACK)
