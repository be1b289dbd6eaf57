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
