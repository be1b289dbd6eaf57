"""Cluster mode: several nodes share the store; this node follows what others did.

Why a module of its own: a node only hears events for the rooms it watches, so it must
follow other nodes' changes (a sale's phase and stock, an offer's teams) and, before a `join`
snapshot, list the room's sales and offers in the store to adopt those created elsewhere.
That is a concern apart from selling: `ClusterFollower` only reads and applies, and nothing
here is published again (the node that made a change told the room).

Adopting one unknown id is each flow's `find` (bounded by server.commerce.absent); the
guarded shared writes, whose outcome the store decides, stay in the flows they guard
(`FlashSales._announce`, the `_shared_*` paths of `TeamBuys`), next to the local branch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server.commerce.plumbing import Plumbing
from server.commerce.sales import MAX_SNAPSHOT_SALES, FlashSales
from server.commerce.teams import TeamBuys
from server.domain import fields
from server.domain.flashsale import OVER, FlashSale, Phase
from server.store.ledger import CommerceStore

log = logging.getLogger("souk.commerce")

ROOM_SYNC_MS = 1000  # cluster: a join lists the room's sales/offers in the store at most 1/s


class ClusterFollower:
    """Applies other nodes' commerce events and lists a room's items before a snapshot."""

    def __init__(
        self,
        store: CommerceStore,
        plumbing: Plumbing,
        sales: FlashSales,
        teams: TeamBuys,
        *,
        shared: bool,
    ) -> None:
        self.store = store
        self.plumbing = plumbing
        self.clock_ms = plumbing.clock_ms
        self.sales = sales
        self.teams = teams
        self.shared = shared
        self._room_synced: dict[str, int] = {}  # room -> when its sales/offers were last listed
        self._offer_syncs: dict[str, asyncio.Task[None]] = {}
        self._offer_dirty: set[str] = set()

    def on_remote(self, ch: str, event: dict[str, Any]) -> None:
        """Another node's commerce event on a room this node watches (the bus's remote hook,
        server/bus/redis.py): a sale or offer this node does not know is adopted from the
        store; a known sale takes the cluster's phase and stock; a team change makes this
        node re-read the offer's open teams. Nothing here is published again: the node that
        made the change told the room."""
        if not self.shared or not ch.startswith("room:"):
            return
        kind, ident = event.get("type"), event.get("id")
        if not isinstance(ident, str) or not fields.ID_RE.fullmatch(ident):
            return
        if kind == "sale":
            sale = self.sales.sales.get(ident)
            if sale is None:
                self.plumbing.spawn(self._adopt_sale(ident))
            else:
                self._follow_sale(sale, event)
        elif kind == "teambuy":
            self._sync_later(ident)
        elif kind == "team" and isinstance(event.get("offer"), str):
            if fields.ID_RE.fullmatch(event["offer"]):
                self._sync_later(event["offer"])

    async def _adopt_sale(self, sale_id: str) -> None:
        try:
            await self.sales.find(sale_id)
        except Exception:
            log.exception("adopting sale %s failed", sale_id)

    def _follow_sale(self, sale: FlashSale, event: dict[str, Any]) -> None:
        """Apply another node's view of a sale: its phase (its timer, its sold-out, a cancel
        made there) and its stock_left; the close was written by that node."""
        try:
            phase: Phase | None = Phase(str(event.get("phase")))
        except ValueError:
            phase = None
        left = event.get("stock_left")
        if not sale.observe(left if type(left) is int else None, phase):
            return
        if sale.phase in OVER:
            self.sales.products.give_back(sale, sale.stock_left)
            self.plumbing.disarm(f"sale:{sale.id}")
            self.plumbing.disarm(f"stock:{sale.id}")
        elif sale.phase is Phase.SOLD_OUT:
            self.sales.announced_sold_out.add(sale.id)
            self.plumbing.disarm(f"stock:{sale.id}")
        else:
            self.sales.arm(sale)

    def _sync_later(self, offer_id: str) -> None:
        """Another node changed an offer: follow it (one read at a time per offer; changes
        that arrive meanwhile are folded into one more read)."""
        if offer_id in self._offer_syncs:
            self._offer_dirty.add(offer_id)
            return

        async def run() -> None:
            try:
                while True:
                    self._offer_dirty.discard(offer_id)
                    offer = await self.teams.find(offer_id)
                    if offer is not None:
                        await self.teams.sync(offer)
                    if offer_id not in self._offer_dirty:
                        return
            except Exception:
                log.exception("following offer %s failed", offer_id)
            finally:
                self._offer_syncs.pop(offer_id, None)

        task = asyncio.ensure_future(run())
        self._offer_syncs[offer_id] = task
        self.plumbing.tasks.add(task)
        task.add_done_callback(self.plumbing.tasks.discard)

    async def sync_room(self, room: str) -> None:
        """Before a `join` snapshot in a cluster: adopt the room's sales and offers that other
        nodes created (events only reach a node for rooms it watches). At most one listing
        per room per ROOM_SYNC_MS, so a join burst costs one query, not one per viewer."""
        if not self.shared:
            return
        now = self.clock_ms()
        if now - self._room_synced.get(room, now - ROOM_SYNC_MS) < ROOM_SYNC_MS:
            return
        self._room_synced[room] = now
        try:
            sale_ids, offer_ids = await self.store.room_items(room)
            for sale_id in sale_ids[-MAX_SNAPSHOT_SALES:]:
                if sale_id not in self.sales.sales:
                    await self.sales.find(sale_id)
            for offer_id in offer_ids:
                if offer_id not in self.teams.offers:
                    await self.teams.find(offer_id)
        except Exception:  # the snapshot goes out with what this node knows
            log.exception("listing the commerce of room %s failed", room)
