"""The state every part of the community adapter works on, declared in one place.

Why: Q&A, groups, notices and the cluster code are one adapter split by subject (qa.py,
groups.py, notices.py, cluster.py); they all read and change the same store, clock, publish
callback and domain objects. Declaring that state once here lets each of those modules be
read, and type-checked, on its own; `Community` (adapter.py) assigns it in its constructor.
"""

from __future__ import annotations

from collections.abc import Callable

from client_sdk.protocol import Code
from server.bus.base import Publish
from server.cluster.notices import Sync
from server.community.connectors import ConnectorHub
from server.domain.community import Directory
from server.domain.mirror import Event, Mirror
from server.domain.moderation import LinkFilter
from server.domain.qa import QuestionBoard
from server.errors import SoukError
from server.store.community import CommunityStore


class CommunityState:
    """The shared state (assigned by `Community.__init__`) and the two helpers all parts use."""

    store: CommunityStore
    sync: Sync
    publish: Publish
    clock_ms: Callable[[], int]
    answer_target_s: int
    directory: Directory
    mirror: Mirror
    boards: dict[str, QuestionBoard]
    filter: LinkFilter
    hub: ConnectorHub

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            self.publish(ev.ch, ev.type, ev.fields, droppable=ev.droppable)

    def board(self, room: str) -> QuestionBoard:
        if not isinstance(room, str) or not 1 <= len(room) <= 64:
            raise SoukError(Code.INVALID, "room must be a string of 1..64 characters")
        b = self.boards.get(room)
        if b is None:
            b = self.boards[room] = QuestionBoard(room, target_s=self.answer_target_s)
        return b
