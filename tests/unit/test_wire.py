"""The connection layer's pure parts: request heads, the upgrade, per-address caps, frame
decoding rules and the pre-encoded batches."""

from __future__ import annotations

import base64

import msgpack
import orjson
import pytest

from client_sdk.protocol import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    DecodeError,
    decode,
    decode_strict,
    encode,
)
from server import handshake
from server.http import HttpError, parse_head
from server.listener import PeerLimits
from server.wsframe import batch_payload, bounded_events, frame_bytes

KEY = base64.b64encode(b"0123456789abcdef").decode()


def head(text: str):  # type: ignore[no-untyped-def]
    return parse_head(text.replace("\n", "\r\n").encode())


def test_request_head_fields_and_repeats() -> None:
    h = head("POST /api/x?y=1 HTTP/1.1\nHost: a\nX-Two: 1\nx-two: 2\nContent-Length: 12")
    assert (h.method, h.target, h.path, h.version) == ("POST", "/api/x?y=1", "/api/x", "HTTP/1.1")
    assert h.fields["x-two"] == "1, 2" and ("X-Two", "1") in h.pairs()
    assert h.content_length() == 12 and h.keep_alive()
    assert not head("GET / HTTP/1.1\nConnection: close").keep_alive()
    assert not head("GET / HTTP/1.0").keep_alive()


@pytest.mark.parametrize(("text", "status"), [
    ("GET /\nHost: a", 400),                      # no version
    ("GET / HTTP/2.0", 505),
    ("G(T / HTTP/1.1", 400),                      # method is not a token
    ("GET http://evil/ HTTP/1.1", 400),           # absolute form
    ("GET / HTTP/1.1\nBad Header: x", 400),
    ("GET / HTTP/1.1\n folded: x", 400),          # obsolete line folding
    ("GET / HTTP/1.1\nX: a\x01b", 400),
    ("GET / HTTP/1.1" + "\nX: y" * 101, 431),
])
def test_malformed_heads_are_refused(text: str, status: int) -> None:
    with pytest.raises(HttpError) as err:
        head(text)
    assert err.value.status == status


def test_body_length_rules() -> None:
    with pytest.raises(HttpError) as err:
        head("POST / HTTP/1.1\nContent-Length: 5, 5").content_length()
    assert err.value.status == 400
    with pytest.raises(HttpError) as err:
        head("POST / HTTP/1.1\nTransfer-Encoding: chunked").content_length()
    assert err.value.status == 411
    assert head("DELETE / HTTP/1.1").content_length() is None


def test_upgrade_answer_and_subprotocol() -> None:
    h = head(f"GET /ws HTTP/1.1\nConnection: keep-alive, Upgrade\nUpgrade: websocket\n"
             f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 13\n"
             f"Sec-WebSocket-Protocol: souk.v9, souk.v1.msgpack")
    assert handshake.wants_upgrade(h)
    raw, sp = handshake.accept(h)
    assert sp == SUBPROTOCOL_MSGPACK
    assert raw.startswith(b"HTTP/1.1 101 ") and raw.endswith(b"\r\n\r\n")
    from websockets.utils import accept_key

    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n".encode() in raw
    assert b"Sec-WebSocket-Protocol: souk.v1.msgpack\r\n" in raw
    no_sp = head(f"GET /ws HTTP/1.1\nConnection: Upgrade\nUpgrade: websocket\n"
                 f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 13")
    raw, sp = handshake.accept(no_sp)
    assert sp == SUBPROTOCOL_JSON and b"Sec-WebSocket-Protocol" not in raw


@pytest.mark.parametrize(("extra", "status"), [
    ("Sec-WebSocket-Key: short\nSec-WebSocket-Version: 13", 400),
    (f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 13", 400),
    (f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 8", 426),
    (f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 13\nSec-WebSocket-Protocol: x", 400),
])
def test_bad_upgrades(extra: str, status: int) -> None:
    with pytest.raises(HttpError) as err:
        handshake.accept(head(f"GET /ws HTTP/1.1\nConnection: Upgrade\nUpgrade: websocket\n{extra}"))
    assert err.value.status == status
    if status == 426:
        assert err.value.response().headers["Sec-WebSocket-Version"] == "13"


def test_peer_limits_cap_open_and_rate() -> None:
    lim = PeerLimits(2, 1.0)
    assert lim.admit("10.0.0.1", 0) and lim.admit("10.0.0.1", 0)
    assert not lim.admit("10.0.0.1", 0)  # two open
    lim.release("10.0.0.1")
    assert not lim.admit("10.0.0.1", 0)  # the burst (2) is spent
    assert lim.admit("10.0.0.1", 1000)  # a second later one more token
    assert lim.admit("10.0.0.2", 0)  # another host is not affected
    assert all(lim.admit("127.0.0.1", 0) for _ in range(50))  # loopback exempt by default
    strict = PeerLimits(1, 0, loopback=True)
    assert strict.admit("::1", 0) and not strict.admit("::1", 0)
    unlimited = PeerLimits(0, 0)
    assert all(unlimited.admit("10.0.0.9", 0) for _ in range(50))
    for _ in range(60):
        lim.release("10.0.0.9")  # releasing what was never counted is harmless
    assert "10.0.0.9" not in lim.open


@pytest.mark.parametrize("sp", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON])
def test_batches_match_the_encoder(sp: str) -> None:
    for n in (2, 15, 16, 300, 70_000):
        items = [{"op": "event", "seq": i, "text": "é"} for i in range(n)]
        assert batch_payload([encode(e, sp) for e in items], sp) == encode({"op": "batch", "items": items}, sp)
    events = [{"op": "event", "seq": i, "text": "x" * 100} for i in range(50)]
    assert bounded_events(events, sp, 100_000) == frame_bytes({"op": "batch", "items": events}, sp)
    assert bounded_events(events[:1], sp, 1000) == frame_bytes(events[0], sp)
    assert bounded_events(events, sp, 2000) is None


def test_strict_decoding_refuses_wrong_frame_types_and_duplicate_keys() -> None:
    ok = {"op": "ping", "rid": 1, "nested": {"a": [1, {"b": 2}]}}
    assert decode_strict(orjson.dumps(ok).decode(), SUBPROTOCOL_JSON) == ok
    assert decode_strict(orjson.dumps(ok).decode().replace(",", ", "), SUBPROTOCOL_JSON) == ok
    assert decode_strict(msgpack.packb(ok), SUBPROTOCOL_MSGPACK) == ok
    with pytest.raises(DecodeError, match="text frames"):
        decode_strict(orjson.dumps(ok), SUBPROTOCOL_JSON)  # JSON in a binary frame
    with pytest.raises(DecodeError, match="binary"):
        decode_strict("{}", SUBPROTOCOL_MSGPACK)
    for dup in ('{"op":"ping","op":"auth"}', '{"op": "ping", "x": {"a": 1, "a": 2}}'):
        with pytest.raises(DecodeError, match="duplicate"):
            decode_strict(dup, SUBPROTOCOL_JSON)
        assert decode(dup, SUBPROTOCOL_JSON)  # the lenient decoder (the SDK's) keeps the last
    with pytest.raises(DecodeError, match="duplicate"):
        decode_strict(b"\x82\xa2op\xa4ping\xa2op\xa4auth", SUBPROTOCOL_MSGPACK)
    # a float32 or a wider int than needed re-encodes differently: checked the slow way, kept
    assert decode_strict(b"\x82\xa2op\xa4ping\xa3rid\xcd\x00\x07", SUBPROTOCOL_MSGPACK)["rid"] == 7
