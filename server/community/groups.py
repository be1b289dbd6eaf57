"""Community groups: creating them, members joining and leaving, tags, links to rooms.

Why: the group ops share one shape: the domain (server/domain/community.py) decides, the store
commits, then the group's channel hears of it; in a cluster the placement of a member can race
another node's (spill-over makes new groups), so a refused write reloads the family and places
again. Links to rooms decide where a room's questions and notices are mirrored
(server/domain/mirror.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from client_sdk.protocol import Code
from server.community.cluster import ClusterCopies
from server.community.frames import _new_id, _require_staff, _user
from server.domain.community import STAFF_ROLES, Tags
from server.domain.mirror import MAX_LINKED_GROUPS
from server.errors import SoukError
from server.store.community import Stale

log = logging.getLogger("souk.community")


class Groups(ClusterCopies):
    """The group part of `Community` (adapter.py)."""

    async def group_create(self, shop: str, fields: dict[str, Any]) -> dict[str, Any]:
        group = self.directory.create_group(_new_id("g"), shop, fields, self.clock_ms())
        try:
            await self.store.create_group(group)
        except Exception:
            self.directory.groups.pop(group.id, None)
            raise
        self._notify("g", id=group.id)
        return group.to_dict()

    async def group_join(
        self,
        user: dict[str, Any],
        group_id: str | None = None,
        tier: str | None = None,
        topic: str | None = None,
        *,
        shop: str | None = None,
        source: str | None = None,
        invited_by: str | None = None,
    ) -> dict[str, Any]:
        """Make the user a member (spill-over applies); returns the group they landed in."""
        uid, name, role = _user(user)
        if role not in ("member", *STAFF_ROLES):
            raise SoukError(Code.FORBIDDEN, "only members may join groups")
        if group_id is not None:
            await self._group(group_id)
        attempts = 20  # a refusal means another node placed members first (never alone)
        for attempt in range(attempts):
            now = self.clock_ms()
            result = self.directory.join(
                {"id": uid, "name": name, "role": role},
                now,
                lambda: _new_id("g"),
                group_id=group_id,
                tier=tier,
                topic=topic,
                shop=shop,
            )
            group = result.group
            if result.already_member:
                return {**group.to_dict(), "spilled": False, "already_member": True,
                        "notices": list(group.recent_notices)}
            tags = None
            if source is not None or invited_by is not None:
                tags = self.directory.update_tags(
                    group.shop, uid, {"source": source, "invited_by": invited_by}
                )
            try:
                await self.store.add_member(group, result.member, result.created, tags, group.shop)
            except Stale as exc:
                # another node placed members first: reload the family and place again
                group.members.pop(uid, None)
                if result.created is not None:
                    self.directory.groups.pop(result.created.id, None)
                if attempt == attempts - 1:
                    raise SoukError(Code.UNAVAILABLE, f"group placement kept racing: {exc.message}"
                    ) from None
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # let the winner finish
                await self._reload_family(group.shop, group.tier, group.topic)
                continue
            except Exception:
                group.members.pop(uid, None)
                if result.created is not None:
                    self.directory.groups.pop(result.created.id, None)
                raise
            break
        group.members[uid] = result.member  # committed (a reload meanwhile may have missed it)
        self._notify("g", id=group.id)
        if result.created is not None:
            # a spill-over group inherits the room links of its siblings (same tier and topic)
            rooms = {
                room
                for sib in self.directory.siblings(group.shop, group.tier, group.topic)
                for room in self.mirror.rooms_of(sib.id)
            }
            for room in sorted(rooms):
                try:
                    self.mirror.link(room, [group.id], self.directory, None)
                except SoukError as exc:  # the room is at its link limit: say so, keep the member
                    log.warning("spill-over group %s not linked to %s: %s", group.id, room, exc)
                    continue
                await self.store.save_links(room, self.mirror.linked(room))
                self._notify("links", room=room)
        self.publish(
            f"group:{group.id}",
            "member_joined",
            {"user": uid, "name": name, "members": len(group.members)},
            droppable=True,
        )
        if result.over_ideal:
            log.info("group %s has %d members (ideal at most 200)", group.id, len(group.members))
        return {
            **group.to_dict(),
            # the recent notices, for a member who was not there when they were sent
            "notices": list(group.recent_notices),
            "spilled": group_id is not None and group.id != group_id,
            "created": result.created is not None,
        }

    async def group_leave(self, user_id: str, group_id: str) -> None:
        await self._drop_member(user_id, group_id, removed=False)

    async def group_remove(self, by: dict[str, Any], user_id: str, group_id: str) -> None:
        """Moderator removal (the ladder's last step): the member may not rejoin the group."""
        _require_staff(by, "remove members")
        await self._drop_member(user_id, group_id, removed=True)

    async def _drop_member(self, user_id: str, group_id: str, *, removed: bool) -> None:
        group = await self._group(group_id, user=user_id)
        member = (
            self.directory.remove(user_id, group_id)
            if removed
            else self.directory.leave(user_id, group_id)
        )
        try:
            await self.store.remove_member(group_id, member, self.clock_ms(), removed)
        except Exception:
            group.members[user_id] = member
            group.removed.discard(user_id)
            raise
        self._notify("g", id=group_id)
        self.publish(
            f"group:{group_id}",
            "member_left",
            {"user": user_id, "members": len(group.members), "removed": removed},
            droppable=True,
        )

    def group_members(self, group_id: str) -> list[dict[str, Any]]:
        group = self.directory.get(group_id)
        return [
            {**m.to_dict(), "tags": self.directory.tags_of(group.shop, m.user).to_dict()}
            for m in sorted(group.members.values(), key=lambda m: (m.joined_at, m.user))
        ]

    def is_member(self, user_id: str, group_id: str) -> bool:
        return self.directory.is_member(user_id, group_id)

    def groups(self, shop: str) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self.directory.groups.values() if g.shop == shop]

    async def update_tags(self, shop: str, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:

        def merge(fresh: Tags | None) -> Tags:  # into what the record has, under its lock
            if fresh is not None:
                self.directory.tags[(shop, user_id)] = fresh
            return self.directory.update_tags(shop, user_id, fields)

        tags = await self.store.merge_tags(shop, user_id, merge)
        self._notify("tags", shop=shop, user=user_id)
        return tags.to_dict()

    async def tag_purchase(
        self, shop: str, user_id: str, product: str, *, big: bool | None = None
    ) -> None:
        """The commerce side calls this on a confirmed order: tags follow what members buy."""
        fields: dict[str, Any] = {"bought": product}
        if big is not None:
            fields["big_customer"] = big
        await self.update_tags(shop, user_id, fields)

    async def link_groups(self, room: str, group_ids: Any, *, shop: str | None = None) -> list[str]:
        """Link groups to a room; returns every group now linked. Mirroring applies from now."""
        self.board(room)
        if self.store.shared and isinstance(group_ids, list):
            await self._reload_links(room)  # add to the cluster's links, not a stale copy
            for gid in group_ids[: MAX_LINKED_GROUPS + 1]:
                if isinstance(gid, str) and 1 <= len(gid) <= 64:
                    with contextlib.suppress(SoukError):
                        await self._group(gid)
        self.mirror.link(room, group_ids, self.directory, shop)
        linked = self.mirror.linked(room)
        await self.store.save_links(room, linked)
        self._notify("links", room=room)
        return linked

    async def recent_group_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.recent_messages(group_id, limit)
