"""The event dispatcher: reactions by type, in order; `emit` isolates the announcer from a
failing reaction and runs awaitable ones in the background; `deliver` waits and raises."""

from __future__ import annotations

import asyncio

import pytest

from server.domain.events import ChatPosted, Liked, RoomJoined, RoomLeft
from server.events import EventDispatcher


def test_emit_reaches_the_reactions_of_that_type_in_order() -> None:
    events = EventDispatcher()
    seen: list[str] = []
    events.subscribe(RoomJoined, lambda e: seen.append(f"a:{e.user}"))
    events.subscribe(RoomJoined, lambda e: seen.append(f"b:{e.user}"))
    events.subscribe(RoomLeft, lambda e: seen.append(f"left:{e.user}"))
    events.emit(RoomJoined("r1", "u1", "viewer"))
    assert seen == ["a:u1", "b:u1"]
    assert events.subscribed(RoomJoined) == 2 and events.subscribed(Liked) == 0
    events.emit(Liked("r1", "u1", "viewer", 3))  # nobody listens: nothing happens
    assert seen == ["a:u1", "b:u1"]


def test_a_failing_reaction_neither_reaches_the_announcer_nor_stops_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    events = EventDispatcher()
    seen: list[str] = []

    def broken(e: RoomJoined) -> None:
        raise RuntimeError("boom")

    events.subscribe(RoomJoined, broken)
    events.subscribe(RoomJoined, lambda e: seen.append(e.user))
    events.emit(RoomJoined("r1", "u2", "viewer"))
    assert seen == ["u2"]
    assert "reaction to RoomJoined failed" in caplog.text


async def test_awaitable_reactions_run_in_the_background_and_drain_waits() -> None:
    events = EventDispatcher()
    done: list[str] = []

    async def slow(e: RoomJoined) -> None:
        await asyncio.sleep(0.05)
        done.append(e.user)

    events.subscribe(RoomJoined, slow)
    events.emit(RoomJoined("r1", "u3", "viewer"))
    assert done == []  # the announcer went on at once
    await events.drain()
    assert done == ["u3"]


async def test_deliver_waits_in_order_and_raises_to_the_announcer() -> None:
    events = EventDispatcher()
    seen: list[str] = []

    async def keep(e: ChatPosted) -> None:
        await asyncio.sleep(0.01)
        seen.append("kept")

    def count(e: ChatPosted) -> None:
        seen.append("counted")

    events.subscribe(ChatPosted, keep)
    events.subscribe(ChatPosted, count)
    message = ChatPosted("group", "g1", "u1", "U", "member", {"id": "m1", "text": "hi"})
    await events.deliver(message)
    assert seen == ["kept", "counted"]

    async def refuse(e: ChatPosted) -> None:
        raise ValueError("not in this group")

    events.subscribe(ChatPosted, refuse)
    with pytest.raises(ValueError, match="not in this group"):
        await events.deliver(message)
