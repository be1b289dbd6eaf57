"""The websocket opening handshake (RFC 6455 §4.2), checked on an already parsed request head.

The connection layer parses every request head itself (it must read the request line to
answer methods other than GET), so the upgrade is validated here from that parse instead of
parsing the same bytes again: the same checks as websockets' `ServerProtocol.accept`, the
101 response as bytes, no compression offered, the subprotocol chosen from the client's list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOLS, Code
from server.http import Head, HttpError


def wants_upgrade(head: Head) -> bool:
    """Does this request ask for a websocket (Connection: upgrade + Upgrade: websocket)?"""
    conn = head.fields.get("connection", "")
    return "upgrade" in conn.lower() and head.fields.get("upgrade", "").lower() == "websocket"


def select_subprotocol(offered: str | None) -> str | None:
    """The client's first supported choice; none offered means JSON (browsers, curl), with no
    Sec-WebSocket-Protocol in the answer. Only unsupported ones offered: refused (400)."""
    if not offered:
        return None
    for sp in offered.split(","):
        sp = sp.strip()
        if sp in SUBPROTOCOLS:
            return sp
    raise HttpError(400, Code.INVALID, "unsupported subprotocol; offer souk.v1.msgpack or souk.v1.json")


def accept(head: Head) -> tuple[bytes, str]:
    """Validate an upgrade request; return the 101 response and the subprotocol in use."""
    if head.method != "GET":
        raise HttpError(405, Code.INVALID, "a websocket opens with GET", allow=("GET",))
    if head.version != "HTTP/1.1":
        raise HttpError(505, Code.INVALID, "websockets need HTTP/1.1")
    f = head.fields
    key = f.get("sec-websocket-key", "")
    try:
        raw_key = base64.b64decode(key.encode(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != 16:
        raise HttpError(400, Code.INVALID, "bad Sec-WebSocket-Key")
    if f.get("sec-websocket-version") != "13":
        raise HttpError(426, Code.INVALID, "Sec-WebSocket-Version 13 only",
                        headers={"Sec-WebSocket-Version": "13"})
    chosen = select_subprotocol(f.get("sec-websocket-protocol"))
    return _SWITCHING + _accept(key) + _TAILS[chosen], chosen or SUBPROTOCOL_JSON


_SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: ")
# what follows the accept key, per subprotocol chosen: built once
_TAILS: dict[str | None, bytes] = {
    sp: b"\r\nServer: Souk\r\n" + (f"Sec-WebSocket-Protocol: {sp}\r\n".encode() if sp else b"") + b"\r\n"
    for sp in (None, *SUBPROTOCOLS)
}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _accept(key: str) -> bytes:
    """Sec-WebSocket-Accept (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)), as bytes."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
