"""What the domain adapters need from the bus: a way to publish an event to a channel."""

from __future__ import annotations

from typing import Any, Protocol


class Publish(Protocol):
    """Publish one event on a channel (`room:<id>`, `group:<id>`, `user:<id>`, `staff:<room>`).

    The bus assigns `seq` and `ts`, keeps it in the channel's bounded history for `resume`,
    and fans it out, coalesced per tick. `droppable` marks events a slow consumer may lose
    (chat, likes, counts): it will see the gap in `seq` and resume.
    """

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None: ...


def envelope(ch: str, type: str, fields: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    """The event as every bus sends it: the caller's fields under the protocol's envelope
    (`op`, `ch`, `ts`, `type` cannot be overridden by a field; `seq` is the bus's to give)."""
    event = dict(fields)
    event.pop("seq", None)
    event["op"] = "event"
    event["ch"] = ch
    event["ts"] = ts_ms
    event["type"] = type
    return event


def history_limit(ch: str, history: int, user_history: int) -> int:
    """Events kept for `resume`: a user's private channel needs fewer than a room."""
    return user_history if ch.startswith("user:") else history
