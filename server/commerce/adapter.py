"""`Commerce`: the one object the gateway, the app and the tests hold for all of commerce.

Why a module of its own: callers see one stable surface (the calls listed in
docs/commerce.md, plus `store`, `sales`, `offers`), while the work
is done by the parts it composes: `Products`, `FlashSales`, `TeamBuys`, `ClusterFollower`,
over one `Plumbing` (clock, timers, tasks, bus). Here live only the wiring, the lifecycle
that spans every part (recovery at start, drain at stop) and the room snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from client_sdk.protocol import Code
from server.bus.base import Publish
from server.commerce.absent import AbsentIds
from server.commerce.cluster import ClusterFollower
from server.commerce.plumbing import Plumbing, wall_ms
from server.commerce.products import Products
from server.commerce.sales import MAX_SNAPSHOT_SALES, FlashSales
from server.commerce.teams import TeamBuys
from server.commerce.ticker import PurchaseTicker
from server.commerce.writes import Pending
from server.domain import fields
from server.domain.catalog import Catalog
from server.domain.coupons import CouponBook
from server.domain.errors import SoukError
from server.domain.events import DomainEvent
from server.domain.flashsale import OVER, FlashSale
from server.domain.teambuy import TeamBuyOffer
from server.store.ledger import CommerceStore


class Commerce:
    """Products, flash sales, team buys and orders for every room of this process."""

    def __init__(
        self,
        store: CommerceStore,
        publish: Publish,
        clock_ms: Callable[[], int] = wall_ms,
        *,
        order_batch: int = 1000,
        announce: Callable[[DomainEvent], None] | None = None,
        coupons: CouponBook | None = None,
        find_coupon: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """`order_batch` caps the orders per batch write; 1 writes each order alone (the
        one-fsync-per-order baseline of the benchmark, together with group_commit=False).
        `announce` tells the other features what commerce decided (domain events: a sale
        live, an order confirmed, a coupon spent); `coupons` is the coupon book `buy`
        reserves in (None: no coupons), `find_coupon` loads a coupon issued on another node
        into it before the reservation."""
        self.store = store
        # several nodes share the store: this node adopts what others created
        shared = store.shared
        self._plumbing = Plumbing(publish, clock_ms, announce)
        absent = AbsentIds(shared, clock_ms)
        pending: Pending = {}  # one map for sale and team orders: team rules skip these
        self._products = Products(self.store, clock_ms, absent)
        self.ticker = PurchaseTicker(self._plumbing, self._products)
        self._plumbing.confirmed = self.ticker.add
        self._sales = FlashSales(self.store, self._plumbing, self._products, absent, pending,
                                 shared=shared, order_batch=order_batch, coupons=coupons,
                                 find_coupon=find_coupon)
        self._teams = TeamBuys(self.store, self._plumbing, self._products, absent, pending,
                               shared=shared)
        self._cluster = ClusterFollower(self.store, self._plumbing, self._sales, self._teams,
                                        shared=shared)

    # -- state callers read ----------------------------------------------------------------
    @property
    def publish(self) -> Publish:
        return self._plumbing.publish

    @property
    def clock_ms(self) -> Callable[[], int]:
        return self._plumbing.clock_ms

    @property
    def shared(self) -> bool:
        return self._sales.shared

    @property
    def catalog(self) -> Catalog:
        return self._products.catalog

    @property
    def sales(self) -> dict[str, FlashSale]:
        return self._sales.sales

    @property
    def offers(self) -> dict[str, TeamBuyOffer]:
        return self._teams.offers

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the ledger and resume: sales whose end passed while the process was down are
        ended (unsold stock back to the product), teams whose deadline passed fail, and every
        remaining deadline gets its timer."""
        self._plumbing.loop = asyncio.get_running_loop()
        state = await self.store.load()
        for product in state.products:
            self.catalog.add(product)
        now = self.clock_ms()
        await self._sales.resume(state.sales, now)
        await self._teams.resume(state.offers, now)
        self._plumbing.running = True
        self._sales.arm_all()
        self._teams.arm_all()

    async def stop(self) -> None:
        """Cancel timers and wait for writes already under way (the store stays open: its
        owner closes it)."""
        self._plumbing.running = False
        self._sales.flush_orders()
        self._plumbing.cancel_timers()
        await self._plumbing.drain()

    # -- products --------------------------------------------------------------------------
    async def product_create(self, shop: str, raw: Any) -> dict[str, Any]:
        """Runs detached so a caller that goes away cannot cut it in half."""
        return await self._plumbing.detached(self._products.create(shop, raw))

    def product(self, product_id: str) -> dict[str, Any] | None:
        product = self.catalog.get(product_id) if isinstance(product_id, str) else None
        return None if product is None else product.to_dict()

    def products(self, shop: str) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.catalog.of_shop(shop)]

    async def set_image(self, product_id: str, image: str) -> dict[str, Any]:
        """A product's picture changed (an upload): kept, then its running sales and offers
        are pushed again so that viewers see it. Returns the product."""
        product = await self._products.find(product_id)
        if product is None:
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        await self.store.set_product_image(product.id, image)
        product.image = image
        for sale in self.sales.values():
            if sale.product == product.id and sale.phase not in OVER:
                self._sales.push(sale)
        for offer in self.offers.values():
            if offer.product == product.id:
                self._teams.push(offer)
        return product.to_dict()

    async def find_product(self, product_id: Any) -> dict[str, Any] | None:
        """`product`, and in a cluster a product another node created (adopted from the store)."""
        product = await self._products.find(product_id) if isinstance(product_id, str) else None
        return None if product is None else product.to_dict()

    async def hold_units(self, product_id: str, shop: str | None, units: int) -> dict[str, Any]:
        """Take `units` of a product's free stock in memory for a lucky draw's prizes (the
        draw's own write takes them from the record, as a sale's does); the product's view.
        `not_found` for another shop's product, `conflict` when too few are free."""
        product = await self._products.product_for(product_id, shop)
        product.reserve(units)
        return product.to_dict()

    def release_units(self, product_id: str, units: int) -> None:
        """Units `hold_units` took that will not be used (a failed write, prizes unwon)."""
        product = self.catalog.get(product_id)
        if product is not None and units > 0:
            product.give_back(units)

    # -- flash sales -----------------------------------------------------------------------
    async def sale_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """See `FlashSales.create`; runs detached so a caller that goes away cannot cut it
        in half."""
        return await self._plumbing.detached(self._sales.create(room, raw, shop))

    async def sale_cancel(self, room: str, sale_id: Any) -> dict[str, Any]:
        """Runs detached so a caller that goes away cannot cut it in half."""
        return await self._plumbing.detached(self._sales.cancel(room, sale_id))

    async def buy(
        self, user_id: str, sale_id: Any, qty: Any, key: Any, name: str = "", coupon: Any = None
    ) -> dict[str, Any]:
        """See `FlashSales.buy`: the order once it is durable."""
        return await self._sales.buy(user_id, sale_id, qty, key, name, coupon)

    async def orders_mine(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self.store.orders_of(fields.user_value(user_id), limit)

    async def teams_mine(self, user_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The user's open and recent teams: this node's copy where it holds the offer (the
        most current), else the stored one."""
        return self._teams.mine(await self.store.teams_of(fields.user_value(user_id), limit))

    async def sales_stats(self, room: str) -> dict[str, Any]:
        return await self.store.sales_stats(fields.ident_value(room, "room"))

    def sale_view(self, sale: FlashSale) -> dict[str, Any]:
        """A sale as viewers see it: the sale plus the product card."""
        return self._sales.view(sale)

    def sale_room(self, sale_id: Any) -> str | None:
        """The room a sale belongs to, for the gateway's permission check (None: unknown)."""
        return self._sales.room(sale_id)

    async def locate_sale(self, sale_id: Any) -> str | None:
        """`sale_room`, adopting a sale another node created (None: unknown anywhere)."""
        return await self._sales.locate(sale_id)

    # -- team buys -------------------------------------------------------------------------
    async def teambuy_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """Runs detached so a caller that goes away cannot cut it in half."""
        return await self._plumbing.detached(self._teams.create(room, raw, shop))

    async def team_open(self, user_id: str, name: str, offer_id: Any, key: Any) -> dict[str, Any]:
        """Open a team as its leader; returns {"team", "order"} once durable."""
        return await self._teams.open(user_id, name, offer_id, key)

    async def team_join(
        self, user_id: str, name: str, offer_id: Any, team_id: Any, key: Any
    ) -> dict[str, Any]:
        """Join team `team_id`, or (None) the open team closest to full; returns {"team",
        "order"} once durable. The call that fills a team confirms every member's order."""
        return await self._teams.join(user_id, name, offer_id, team_id, key)

    def offer_view(self, offer: TeamBuyOffer) -> dict[str, Any]:
        return self._teams.view(offer)

    def offer_room(self, offer_id: Any) -> str | None:
        """The room a team-buy offer belongs to (None: unknown)."""
        return self._teams.room(offer_id)

    async def locate_offer(self, offer_id: Any) -> str | None:
        """`offer_room`, adopting an offer another node created (None: unknown anywhere)."""
        return await self._teams.locate(offer_id)

    # -- the end of a live ------------------------------------------------------------------
    async def end_room(self, room: str) -> dict[str, Any]:
        """The room's live ended: its running sales end and its open teams fail (holds
        released), each written before the room is told. Runs detached."""
        async def end() -> dict[str, Any]:
            return {"sales": await self._sales.end_room(room),
                    "teams": await self._teams.close_room(room)}

        return await self._plumbing.detached(end())

    # -- snapshot and cluster --------------------------------------------------------------
    def room_snapshot(self, room: str) -> dict[str, Any]:
        """The commerce part of a `join` snapshot: the room's recent sales and its offers."""
        sale_ids = self._sales.sales_of.get(room, [])[-MAX_SNAPSHOT_SALES:]
        return {
            "sales": [self.sale_view(self.sales[s]) for s in sale_ids],
            "teambuys": [self.offer_view(self.offers[o])
                         for o in self._teams.offers_of.get(room, [])],
        }

    def on_remote(self, ch: str, event: dict[str, Any]) -> None:
        """Another node's commerce event (the bus's remote hook): see `ClusterFollower`."""
        self._cluster.on_remote(ch, event)

    async def sync_room(self, room: str) -> None:
        """Before a `join` snapshot in a cluster: adopt the room's sales and offers that other
        nodes created (at most one listing per room per second)."""
        await self._cluster.sync_room(room)
