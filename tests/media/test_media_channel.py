"""The media worker's socket: packet framing, batches, control messages, loss policy, EOF."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from media.channel import Channel, Message, pair
from media.errors import MediaError
from media.packet import MediaPacket, pack, pack_batch, unpack, unpack_batch
from media.testing.peers import wait_until


@pytest.mark.parametrize(
    "packet",
    [
        MediaPacket(65535, 0xFFFFFFFF, 1, b"\x10" * 1200, None, True),
        MediaPacket(7, 960, 0, b"opus", (True, 127), False),
        MediaPacket(0, 0, 1, b"", (False, 0), False),
    ],
)
def test_a_packet_crosses_the_socket_unchanged(packet: MediaPacket) -> None:
    sid, back = unpack(memoryview(pack(42, packet)))
    assert sid == 42
    assert (back.seq, back.timestamp, back.marker, back.payload, back.audio_level, back.keyframe) == (
        packet.seq, packet.timestamp, packet.marker, packet.payload, packet.audio_level,
        packet.keyframe,
    )


def test_a_batch_carries_its_packets_in_order_and_a_short_message_is_refused() -> None:
    packets = [MediaPacket(i, i * 3000, i % 2, bytes([i]) * (i + 1)) for i in range(5)]
    batch = pack_batch([pack(1, p) for p in packets])
    back = [unpack(view)[1] for view in unpack_batch(memoryview(batch))]
    assert [(p.seq, p.payload) for p in back] == [(p.seq, p.payload) for p in packets]
    with pytest.raises(struct.error):
        unpack(memoryview(b"P\x00"))


async def test_control_and_packets_arrive_in_order_and_requests_are_answered() -> None:
    a, b = pair()
    got: list[object] = []
    closed: list[str] = []

    def serve(message: Message) -> None:
        got.append(message["op"])
        if message["op"] == "double":
            server.reply(message, value=2 * message["value"])
        elif message["op"] == "refuse":
            server.reply(message, error="not_found", message="no such thing")

    client = Channel(a, lambda v: None, lambda m: None, lambda: closed.append("client"))
    server = Channel(b, lambda v: got.append(unpack(v)[1].seq), serve,
                     lambda: closed.append("server"))
    client.send({"op": "open"})
    client.send_packet(pack(1, MediaPacket(5, 0, 1, b"x")))
    client.send_packet(pack_batch([pack(1, MediaPacket(6, 0, 0, b"y")),
                                   pack(1, MediaPacket(7, 0, 1, b"z"))]))
    assert (await client.request({"op": "double", "value": 21}, 5))["value"] == 42
    with pytest.raises(MediaError) as err:
        await client.request({"op": "refuse"}, 5)
    assert (err.value.code, err.value.message) == ("not_found", "no such thing")
    assert got == ["open", 5, 6, 7, "double", "refuse"]
    # the other end going away: EOF on this side, once; a request then fails at once
    server.close()
    await wait_until(lambda: closed == ["client"], 5, "EOF seen")
    with pytest.raises(MediaError) as err:
        await client.request({"op": "double", "value": 1}, 5)
    assert err.value.code == "unavailable"
    client.close()


async def test_a_full_socket_drops_packets_but_never_control_messages() -> None:
    a, b = pair()
    b.setblocking(False)
    sender = Channel(a, lambda v: None, lambda m: None, lambda: None)
    data = pack(1, MediaPacket(1, 0, 0, b"\x00" * 1200))
    for _ in range(20_000):  # far more than the socket holds: nobody reads yet
        sender.send_packet(data)
    assert sender.packets_dropped > 0
    assert sender.packets_sent + sender.packets_dropped == 20_000
    for i in range(50):
        sender.send({"op": "keep", "i": i})  # queued behind the full socket, in order
    sender.send_packet(data)  # while control messages wait, packets are dropped
    received: list[int] = []
    while len(received) < 50:
        try:
            message = b.recv(256 * 1024)
        except BlockingIOError:
            await asyncio.sleep(0.01)  # let the sender's writer callback flush its queue
            continue
        if message[0] == 0x43:
            received.append(msgpack.unpackb(message[1:])["i"])
    assert received == list(range(50))
    sender.close()
    b.close()
