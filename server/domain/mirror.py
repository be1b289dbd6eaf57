"""Mirroring a room's Q&A into its linked community groups, and answers back.

Sans-I/O. The invariants (what makes mirroring trustworthy):
- a room question is mirrored once into each linked core/normal group, each copy with its own
  id and `origin: {room, question}`; mirroring is idempotent by origin, so a replayed ask, a
  resumed connection or a restart never mirrors twice;
- a member's reply to a copy answers the origin question in the room; the other copies are
  marked answered; nothing is sent back to the group the answer came from (no echo);
- an answer given in the room (or through a connector) updates every group's copy.

The rules return `Event`s; the adapter publishes them. Channels are plain strings here
(`room:<id>`, `group:<id>`) because the domain imports nothing from outside itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import Code
from server.domain.community import Directory
from server.domain.errors import SoukError
from server.domain.qa import Question

MIRRORED_TIERS = ("core", "normal")
MAX_LINKED_GROUPS = 50


@dataclass(frozen=True)
class Event:
    """One event to publish: channel, type, fields, and whether a slow consumer may drop it."""

    ch: str
    type: str
    fields: dict[str, Any]
    droppable: bool = False


@dataclass
class Copy:
    """A question's copy in one group."""

    id: str
    group: str
    room: str
    question: str


@dataclass
class Mirror:
    """Room ↔ group links and the copies made so far."""

    links: dict[str, list[str]] = field(default_factory=dict)
    copies: dict[tuple[str, str], dict[str, Copy]] = field(default_factory=dict)
    by_id: dict[str, Copy] = field(default_factory=dict)

    # -- links ------------------------------------------------------------------------
    def link(self, room: str, group_ids: Any, directory: Directory, shop: str | None) -> list[str]:
        """Link groups to a room (idempotent); returns the groups newly linked.

        Every tier may be linked: core/normal groups get mirrored questions, welfare groups
        only sale notices. With `shop` given, only that shop's groups may be linked.
        """
        if not isinstance(group_ids, list) or not group_ids:
            raise SoukError(Code.INVALID, "groups must be a non-empty list of group ids")
        groups = [directory.get(g) for g in group_ids]
        if shop is not None and any(g.shop != shop for g in groups):
            raise SoukError(Code.FORBIDDEN, "a room may link only its own shop's groups")
        linked = self.links.setdefault(room, [])
        added = [g.id for g in groups if g.id not in linked]
        if len(linked) + len(set(added)) > MAX_LINKED_GROUPS:
            raise SoukError(Code.INVALID, f"a room links at most {MAX_LINKED_GROUPS} groups")
        for gid in added:
            if gid not in linked:
                linked.append(gid)
        return added

    def linked(self, room: str) -> list[str]:
        return list(self.links.get(room, ()))

    def rooms_of(self, group_id: str) -> list[str]:
        return [room for room, groups in self.links.items() if group_id in groups]

    def mirror_targets(self, room: str, directory: Directory) -> list[str]:
        return [
            gid
            for gid in self.links.get(room, ())
            if gid in directory.groups and directory.groups[gid].tier in MIRRORED_TIERS
        ]

    # -- copies -----------------------------------------------------------------------
    def add_copy(self, copy: Copy) -> None:
        """Record a copy (used by mirror_question and by load-on-start)."""
        self.copies.setdefault((copy.room, copy.question), {})[copy.group] = copy
        self.by_id[copy.id] = copy

    def mirror_question(
        self, q: Question, directory: Directory, new_id: Callable[[], str]
    ) -> list[Copy]:
        """Make the copies this question still lacks; [] when every target already has one."""
        have = self.copies.get((q.room, q.id), {})
        made = []
        for gid in self.mirror_targets(q.room, directory):
            if gid in have:
                continue
            copy = Copy(new_id(), gid, q.room, q.id)
            self.add_copy(copy)
            made.append(copy)
        return made

    def copies_of(self, room: str, qid: str) -> list[Copy]:
        return list(self.copies.get((room, qid), {}).values())

    def copies_in(self, group_id: str) -> list[Copy]:
        return [c for c in self.by_id.values() if c.group == group_id]

    def resolve_reply(self, group_id: str, reply_to: Any) -> Copy | None:
        """The copy a group message replies to, if it is a mirrored question of that group."""
        if not isinstance(reply_to, str):
            return None
        copy = self.by_id.get(reply_to)
        if copy is None or copy.group != group_id:
            return None
        return copy

    # -- events -----------------------------------------------------------------------
    @staticmethod
    def copy_fields(q: Question, copy: Copy) -> dict[str, Any]:
        fields = q.to_event()
        fields["id"] = copy.id
        fields["group"] = copy.group
        fields["origin"] = {"room": q.room, "question": q.id}
        return fields

    def question_events(
        self,
        q: Question,
        *,
        only: Iterable[Copy] | None = None,
        skip_group: str | None = None,
        to_room: bool = True,
        droppable: bool = False,
    ) -> list[Event]:
        """The room's `question` event and one per group copy (minus where it came from)."""
        events = []
        if to_room:
            events.append(Event(f"room:{q.room}", "question", q.to_event(), droppable))
        copies = list(only) if only is not None else self.copies_of(q.room, q.id)
        for copy in copies:
            if copy.group == skip_group:
                continue
            events.append(
                Event(f"group:{copy.group}", "question", self.copy_fields(q, copy), droppable)
            )
        return events

    def notice_targets(self, room: str, directory: Directory) -> list[str]:
        """Every linked group of every tier gets sale notices (welfare within its cap)."""
        return [gid for gid in self.links.get(room, ()) if gid in directory.groups]
