"""The local bus: per-channel seq, bounded history, epochs, and what resume may hand back."""

from __future__ import annotations

from server.bus.local import LocalBus
from server.fanout import Hub


def make() -> LocalBus:
    return LocalBus(Hub(), lambda: 1000, history=5)


async def test_seq_per_channel_and_history_bound() -> None:
    bus = make()
    for i in range(8):
        bus.publish("room:a", "chat", {"i": i})
    bus.publish("room:b", "chat", {"i": 0})
    assert (await bus.head("room:a"))[1] == 8
    assert (await bus.head("room:b"))[1] == 1
    assert [e["seq"] for e in (await bus.since("room:a", 5, None)) or []] == [6, 7, 8]
    assert (await bus.since("room:a", 8, None)) == []
    assert (await bus.since("room:a", 2, None)) is None  # seq 3 is gone
    assert (await bus.since("room:a", 3, None)) is not None
    assert (await bus.since("room:a", 9, None)) is None  # from the future


async def test_epoch_mismatch_means_resync() -> None:
    bus = make()
    bus.publish("room:a", "chat", {})
    epoch, _ = (await bus.head("room:a"))
    assert (await bus.since("room:a", 0, epoch)) is not None
    assert (await bus.since("room:a", 0, "other")) is None


def test_event_fields_cannot_override_envelope() -> None:
    bus = make()
    ev = bus.publish("room:a", "chat", {"op": "ok", "seq": 99, "ch": "user:x", "text": "t"})
    assert (ev["op"], ev["seq"], ev["ch"], ev["type"], ev["text"]) == ("event", 1, "room:a", "chat", "t")
