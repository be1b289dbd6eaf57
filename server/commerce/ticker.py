"""The asyncio side of social proof (server/domain/purchases.py): each acknowledged sale order
and each confirmed team order of a room joins the room's feed, which is sent as a `purchase`
event at most twice a second on this node."""

from __future__ import annotations

from client_sdk.protocol import room_channel
from server.commerce.plumbing import Plumbing
from server.commerce.products import Products
from server.domain.order import Order
from server.domain.purchases import PurchaseFeed


class PurchaseTicker:
    def __init__(self, plumbing: Plumbing, products: Products) -> None:
        self.plumbing = plumbing
        self.products = products
        self.feeds: dict[str, PurchaseFeed] = {}
        self.sent = 0  # events sent (read by tests)

    def add(self, order: Order) -> None:
        if order.kind not in ("sale", "team"):
            return  # a prize is not a purchase
        product = self.products.catalog.get(order.product)
        now = self.plumbing.clock_ms()
        feed = self.feeds.setdefault(order.room, PurchaseFeed())
        due = feed.add(order.name, product.title if product is not None else "", order.qty, now)
        if due is None:
            return
        if due <= now:
            self._send(order.room)
        else:
            self.plumbing.call_at(f"purchase:{order.room}", due, lambda: self._send(order.room))

    def _send(self, room: str) -> None:
        feed = self.feeds.get(room)
        if feed is None:
            return
        event = feed.take(self.plumbing.clock_ms())
        if event is not None:
            self.sent += 1
            self.plumbing.emit(room_channel(room), "purchase", event, droppable=True)
