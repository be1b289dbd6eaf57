"""Merchant notices to groups: posted by staff, or sent when a flash sale or team buy starts.

Why: one path for every notice, whoever sends it: the kind and text are checked, each target
group's weekly welfare cap is applied (server/domain/community.py), every notice is committed
before the group hears it, and a room's notices also go to the room's connectors.
"""

from __future__ import annotations

from typing import Any

from client_sdk.protocol import Code
from server.community.cluster import ClusterCopies
from server.community.frames import _require_staff
from server.domain.qa import clean_text
from server.errors import SoukError

NOTICE_KINDS = ("sale", "teambuy", "coupon", "info")
MAX_NOTICE_CHARS = 1000


class Notices(ClusterCopies):
    """The notice part of `Community` (adapter.py)."""

    async def notice(
        self,
        user: dict[str, Any],
        kind: Any,
        text: Any,
        *,
        group: str | None = None,
        room: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A merchant notice to one group, or to every group linked to a room.

        To one welfare group above its weekly cap: error cap_reached. To a room's groups:
        welfare groups at their cap are skipped and listed in `skipped`.
        """
        _require_staff(user, "post notices")
        return await self._notice(kind, text, group=group, room=room, extra=extra)

    async def _notice(
        self,
        kind: Any,
        text: Any,
        *,
        group: str | None,
        room: str | None,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if kind not in NOTICE_KINDS:
            raise SoukError(Code.INVALID, f"kind must be one of {', '.join(NOTICE_KINDS)}")
        body = clean_text(text, "notice", MAX_NOTICE_CHARS)
        if (group is None) == (room is None):
            raise SoukError(Code.INVALID, "give either a group or a room")
        if group is not None:
            await self._group(group)  # in a cluster: it may have been made on another node
        now = self.clock_ms()
        sent: list[str] = []
        skipped: list[dict[str, Any]] = []
        targets = (
            [group] if group is not None else self.mirror.notice_targets(str(room), self.directory)
        )
        for gid in targets:
            fields = {"kind": kind, "text": body, "group": gid, "ts": now, **(extra or {})}
            if room is not None:
                fields["room"] = room
            try:
                self.directory.record_notice(gid, now)
                cap = self.directory.notice_cap(gid, now)
                try:
                    kept = await self.store.add_notice(gid, str(kind), body, now, cap, fields)
                except Exception:
                    self.directory.unrecord_notice(gid, now)
                    raise
                if not kept:  # other nodes used the week's cap: learn their notices, refuse
                    self.directory.unrecord_notice(gid, now)
                    await self._reload_group(gid)
                    raise SoukError(Code.CAP_REACHED, f"welfare group {gid} reached its weekly cap "
                                    f"(cap {cap[2] if cap else '?'})", group=gid)
            except SoukError as exc:
                if group is not None:
                    raise
                skipped.append({"group": gid, "code": exc.code})
                continue
            self._notify("g", id=gid)
            self.directory.get(gid).remember_notice(fields)
            self.publish(f"group:{gid}", "notice", fields)
            sent.append(gid)
        if room is not None:
            self.hub.to_room(
                room, {"type": "notice", "kind": kind, "text": body, "room": room, **(extra or {})}
            )
        return {"sent": sent, "skipped": skipped}

    async def on_sale_started(self, room: str, sale: dict[str, Any]) -> dict[str, Any]:
        """Commerce calls this when a flash sale goes live: linked groups get a notice."""
        title = sale.get("title") or sale.get("product") or "a product"
        price = sale.get("price")
        currency = sale.get("currency", "")
        price_txt = f" at {price / 100:.2f} {currency}".rstrip() if isinstance(price, int) else ""
        text = f"Flash sale live now: {title}{price_txt}"
        # what the pages show in their language (title, price), not the English text
        extra = {"sale": sale.get("id"), "ends_at": sale.get("ends_at"), "title": title,
                 "price": price, "currency": currency}
        return await self._notice("sale", text, group=None, room=room, extra=extra)

    async def on_teambuy_started(self, room: str, offer: dict[str, Any]) -> dict[str, Any]:
        title = offer.get("title") or offer.get("product") or "a product"
        text = f"Team buy open: {title}, teams of {offer.get('size', '?')}"
        return await self._notice(
            "teambuy", text, group=None, room=room,
            extra={"offer": offer.get("id"), "title": title, "size": offer.get("size")}
        )
