"""Flash sales: creation, the `buy` hot path with its batched durable writes, phases, pushes.

Why a module of its own: a sale's state (its phase timers, its stock-push throttle, the
sold-out announced once, the batch of orders waiting for the next write) belongs together and
to nothing else; the rules themselves are pure (server.domain.flashsale).

The hot path of `buy`: validate, then reserve in memory in one synchronous step (the event
loop is single-threaded, so the check-and-decrement is atomic without a lock), then await the
durable write (group commit), and only then answer. A sold-out sale answers every later
attempt from memory without touching storage. If the durable write fails, the reservation is
given back before the caller hears `unavailable`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from client_sdk.protocol import Code, room_channel, user_channel
from server.commerce.absent import AbsentIds
from server.commerce.plumbing import Plumbing, new_id
from server.commerce.products import Products
from server.commerce.writes import Pending, wait_write
from server.domain import fields
from server.domain.coupons import CouponBook
from server.domain.events import CouponRedeemed, SaleWentLive
from server.domain.flashsale import OVER, FlashSale, Phase, sale_spec
from server.domain.order import Order
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.ledger import CommerceStore, KnownKey, StockConflict

log = logging.getLogger("souk.commerce")

MAX_SNAPSHOT_SALES = 50


class FlashSales:
    """Every flash sale of this process, and the orders on their way to the store."""

    def __init__(
        self,
        store: CommerceStore,
        plumbing: Plumbing,
        products: Products,
        absent: AbsentIds,
        pending: Pending,
        *,
        shared: bool,
        order_batch: int,
        coupons: CouponBook | None = None,
        find_coupon: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.plumbing = plumbing
        self.clock_ms = plumbing.clock_ms
        self.products = products
        self.absent = absent
        self.pending = pending
        self.shared = shared
        self.sales: dict[str, FlashSale] = {}
        self.sales_of: dict[str, list[str]] = {}
        self.announced_sold_out: set[str] = set()
        self._stock_throttle: dict[str, PushThrottle] = {}
        self._batch: list[tuple[FlashSale, Order, asyncio.Future[None]]] = []
        self._order_batch = max(1, order_batch)
        # the coupon book `buy` reserves in (None: no coupons), and what loads a coupon
        # issued on another node into it before the reservation
        self.coupons = coupons
        self.find_coupon = find_coupon

    # -- recovery --------------------------------------------------------------------------
    async def resume(self, sales: list[FlashSale], now: int) -> None:
        """Sales loaded from the ledger; those whose end passed while the process was down
        are ended (unsold stock back to the product)."""
        for sale in sales:
            was_over = sale.phase in OVER
            before_left = sale.stock_left
            self.register(sale)
            if sale.phase is Phase.SOLD_OUT:
                self.announced_sold_out.add(sale.id)
            if sale.tick(now) and sale.phase in OVER and not was_over:
                self.products.give_back(sale, before_left)
                await self.store.close_sale(sale.id, str(sale.phase))
                self._announce(sale)

    def arm_all(self) -> None:
        for sale in self.sales.values():
            self.arm(sale)

    # -- creation and cancel ---------------------------------------------------------------
    async def create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """Create a sale (its stock is reserved from the product at once); `shop`, when given,
        must own the product."""
        room = fields.ident_value(room, "room")
        now = self.clock_ms()
        spec = sale_spec(raw, now)
        product = await self.products.product_for(spec.product, shop)
        product.reserve(spec.stock)
        sale = FlashSale.create(new_id("s", now), room, spec, product, now)
        try:
            await self.store.add_sale(sale)
        except StockConflict:
            product.give_back(spec.stock)
            raise SoukError(Code.CONFLICT, "not enough product stock") from None
        except Exception:
            product.give_back(spec.stock)
            log.exception("sale write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the sale; try again") from None
        self.register(sale)
        if sale.tick(self.clock_ms()):  # time moved during the write
            self._phase_moved(sale)  # publishes and arms
        else:
            self._publish_sale(sale)
            self.arm(sale)
        return self.view(sale)

    async def cancel(self, room: str, sale_id: Any) -> dict[str, Any]:
        sale = await self._sale_in(room, sale_id)
        units = sale.cancel(self.clock_ms())
        self.products.give_back(sale, units)
        self.plumbing.disarm(f"sale:{sale.id}")
        try:
            await self.store.close_sale(sale.id, str(Phase.CANCELLED))
        except Exception:
            log.exception("sale cancel write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the cancel; try again") from None
        finally:
            self._publish_sale(sale)
        return self.view(sale)

    async def end_room(self, room: str) -> int:
        """The room's live ended: its sales not over yet end now, durably, and the room is
        told. Returns how many ended."""
        now = self.clock_ms()
        ended = [sale for sid in self.sales_of.get(room, [])
                 if (sale := self.sales.get(sid)) is not None and sale.end_now(now)]
        for sale in ended:
            self.products.give_back(sale, sale.stock_left)
            self.plumbing.disarm(f"sale:{sale.id}")
        await asyncio.gather(*(self._close_sale(sale) for sale in ended))
        for sale in ended:
            self._announce(sale)
        return len(ended)

    async def _sale_in(self, room: str, sale_id: Any) -> FlashSale:
        sale_id = fields.ident_value(sale_id, "sale")
        sale = await self.find(sale_id)
        if sale is None or sale.room != room:
            raise SoukError(Code.NOT_FOUND, f"no sale {sale_id} in this room")
        return sale

    # -- finding (adoption in a cluster) ---------------------------------------------------
    async def find(self, sale_id: str) -> FlashSale | None:
        """A sale this node knows, or in a cluster one another node created after this node
        started: read from the store once and adopted (timers, snapshots, pushes)."""
        sale = self.sales.get(sale_id)
        if sale is None and self.absent.may_ask("sale", sale_id):
            stored = self.absent.note("sale", sale_id, await self.store.sale(sale_id))
            sale = self.sales.get(sale_id)  # another task may have adopted it meanwhile
            if sale is None and stored is not None:
                await self.products.find(stored.product)
                sale = self.sales.get(sale_id)  # and again: that was another await
            if sale is None and stored is not None:
                self.register(stored)
                if stored.phase is Phase.SOLD_OUT:
                    self.announced_sold_out.add(stored.id)
                self.arm(stored)
                sale = stored
        return sale

    async def locate(self, sale_id: Any) -> str | None:
        """`room`, adopting a sale another node created (None: unknown anywhere)."""
        if not isinstance(sale_id, str) or not fields.ID_RE.fullmatch(sale_id):
            return None
        sale = await self.find(sale_id)
        return None if sale is None else sale.room

    def room(self, sale_id: Any) -> str | None:
        """The room a sale belongs to, for the gateway's permission check (None: unknown)."""
        sale = self.sales.get(sale_id) if isinstance(sale_id, str) else None
        return None if sale is None else sale.room

    # -- buying ----------------------------------------------------------------------------
    async def buy(
        self, user_id: str, sale_id: Any, qty: Any, key: Any, name: str = "", coupon: Any = None
    ) -> dict[str, Any]:
        """Buy `qty` units, all or nothing; returns the order once it is durable.

        `coupon`: reserved in `self.coupons` in the same synchronous step as the
        stock, written with the order (unique redemption row), released if the write fails."""
        user_id = fields.user_value(user_id)
        name = fields.name_value(name)
        sale = await self.find(fields.ident_value(sale_id, "sale"))
        if sale is None:
            raise SoukError(Code.NOT_FOUND, f"no sale {sale_id}")
        if coupon is not None and self.find_coupon is not None and isinstance(coupon, str):
            await self.find_coupon(coupon, user_id)  # issued on another node: known before the step
        now = self.clock_ms()
        before = sale.phase
        order_id = new_id("o", now)
        try:
            order = sale.buy(user_id, name, qty, key, order_id, now)
        finally:
            if sale.phase is not before and sale.phase is not Phase.SOLD_OUT:
                self._phase_moved(sale)
        try:
            if order.id != order_id:  # a replay of a known key: same order, once it is durable
                pending = self.pending.get(order.id)
                if pending is not None:
                    await wait_write(pending)
                return (sale.order_for(order.user, order.key) or order).to_dict()
            if coupon is not None:  # engagement: no await between the stock and the coupon
                order = self._apply_coupon(sale, order, coupon, now)
            await wait_write(self._enqueue(sale, order))
            return order.to_dict()
        except KnownKey:
            return (await self._known_order(sale, order)).to_dict()

    async def _known_order(self, sale: FlashSale, order: Order) -> Order:
        """The key was used on another node: answer with that node's order, read back from
        the store (it may still be committing there: wait for it, bounded)."""
        for attempt in range(20):  # about 4 s in all
            known = await self.store.sale_order(order.user, sale.id, order.key)
            if known is not None:
                if known.qty != order.qty:
                    raise SoukError(Code.CONFLICT, "this key was used for another quantity",
                                    order=known.id)
                if sale.order_for(known.user, known.key) is None:
                    sale.restore(known)  # later replays on this node answer from memory
                return known
            await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))
        raise SoukError(Code.UNAVAILABLE, "this key's order is still being recorded; try again")

    def _apply_coupon(self, sale: FlashSale, order: Order, coupon: Any, now: int) -> Order:
        """Reserve the coupon for a just-reserved order, or undo the order and refuse."""
        try:
            if self.coupons is None:
                raise SoukError(Code.UNAVAILABLE, "coupons are not enabled on this server")
            cid = fields.ident_value(coupon, "coupon")
            discount = self.coupons.reserve(cid, order.user, order.amount, order.id, now)
        except SoukError:
            self._unbuy(sale, order)
            raise
        amended = dataclasses.replace(order, coupon=cid, discount=discount)
        sale.amend(amended)
        return amended

    def _enqueue(self, sale: FlashSale, order: Order) -> asyncio.Future[None]:
        """Queue an order for the next batch write; the batch goes out at the end of this
        loop iteration, so a rush costs one write (a few statements) per iteration, not
        two statements per order."""
        assert self.plumbing.loop is not None, "Commerce.start() first"
        fut: asyncio.Future[None] = self.plumbing.loop.create_future()
        self.pending[order.id] = fut
        self._batch.append((sale, order, fut))
        if len(self._batch) >= self._order_batch:
            self.flush_orders()
        elif len(self._batch) == 1:
            self.plumbing.loop.call_soon(self.flush_orders)
        return fut

    def flush_orders(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self.plumbing.spawn(self._write_orders(batch))

    async def _write_orders(
        self, batch: list[tuple[FlashSale, Order, asyncio.Future[None]]]
    ) -> None:
        try:
            results = await self.store.add_orders([order for _, order, _ in batch])
        except Exception as exc:
            log.error("order batch write failed: %r", exc)
            results = [exc] * len(batch)
        moved: dict[str, FlashSale] = {}
        for (sale, order, fut), error in zip(batch, results, strict=True):
            if self.shared:
                moved[sale.id] = sale  # a refusal too: the gate told how many are left
            self.pending.pop(order.id, None)
            if error is None:
                # told here, not by the caller: a buyer that went away still has its order
                self.plumbing.order(order)
                if order.coupon is not None and self.coupons is not None:
                    self.coupons.redeemed(order.coupon, order.id)
                    self.plumbing.emit(user_channel(order.user), "coupon",
                                       {"id": order.coupon, "status": "redeemed",
                                        "order": order.id})
                    self.plumbing.tell(CouponRedeemed(order.coupon, order.id, order.user))
                moved[sale.id] = sale
                if not fut.done():
                    fut.set_result(None)
                continue
            self._unbuy(sale, order)
            if order.coupon is not None and self.coupons is not None:
                self.coupons.release(order.coupon, order.id)
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: the buyer (or its replays) re-raise it
        for sale in moved.values():
            if self.shared:  # the cluster's count, not only this node's buyers
                sale.observe(self.store.stock_left(sale.id))
            if sale.phase is Phase.LIVE:
                self._stock_moved(sale)
            elif sale.phase is Phase.SOLD_OUT and sale.id not in self.announced_sold_out:
                self.announced_sold_out.add(sale.id)
                self._announce(sale)  # the final 0: a phase change, never droppable

    def _unbuy(self, sale: FlashSale, order: Order) -> None:
        before = sale.phase
        give = sale.release(order, self.clock_ms())
        if self.shared:  # refused because the cluster sold out: stay sold out, say nothing
            sale.observe(self.store.stock_left(sale.id))
        if sale.phase is not before:
            self._phase_moved(sale)  # gives the unsold stock back if the sale is now over
        elif give:
            self.products.give_back(sale, give)  # the sale closed meanwhile
        elif sale.phase is Phase.LIVE:
            self._stock_moved(sale)

    # -- views and events ------------------------------------------------------------------
    def view(self, sale: FlashSale) -> dict[str, Any]:
        """A sale as viewers see it: the sale plus the product card."""
        view = sale.to_dict()
        product = self.products.catalog.get(sale.product)
        if product is not None:
            view["title"] = product.title
            view["image"] = product.image
            view["list_price"] = product.price
        return view

    def register(self, sale: FlashSale) -> None:
        self.sales[sale.id] = sale
        self.sales_of.setdefault(sale.room, []).append(sale.id)
        self._stock_throttle[sale.id] = PushThrottle()

    def push(self, sale: FlashSale) -> None:
        """Tell the room the sale again (its product card changed)."""
        self._publish_sale(sale)

    def _publish_sale(self, sale: FlashSale, *, droppable: bool = False) -> None:
        self._tell_sale(sale, sale.phase, self.view(sale), droppable=droppable)

    def _tell_sale(
        self, sale: FlashSale, phase: Phase, view: dict[str, Any], *, droppable: bool = False
    ) -> None:
        """The room sees the sale; while it is live, the other features hear it too."""
        self.plumbing.emit(room_channel(sale.room), "sale", view, droppable=droppable)
        if phase is Phase.LIVE:
            self.plumbing.tell(SaleWentLive(sale.room, sale.id, view))

    def _phase_moved(self, sale: FlashSale) -> None:
        """A phase changed by time or by a failed write: tell the room, close if over."""
        if sale.phase is Phase.LIVE:  # e.g. back from sold_out: announce the next zero again
            self.announced_sold_out.discard(sale.id)
        if sale.phase in OVER:
            self.products.give_back(sale, sale.stock_left)
            self.plumbing.disarm(f"sale:{sale.id}")
            self.plumbing.spawn(self._close_sale(sale))
        else:
            self.arm(sale)
        self._announce(sale)

    def _announce(self, sale: FlashSale) -> None:
        """A phase change (live, sold out, ended) goes to the room once. In a cluster every
        node applies it (its own timer, its own gate answers), and the one that claims
        (sale, phase) first in the shared store tells the room."""
        if not self.shared:
            self._publish_sale(sale)
            return
        self.plumbing.spawn(self._claim_and_announce(sale, sale.phase))

    async def _claim_and_announce(self, sale: FlashSale, phase: Phase) -> None:
        try:
            won = await self.store.claim(f"sale:{sale.id}:{phase}")
        except Exception as exc:  # better twice than never
            log.warning("claiming %s of sale %s failed: %r", phase, sale.id, exc)
            won = True
        if won:
            view = self.view(sale)
            view["phase"] = str(phase)
            self._tell_sale(sale, phase, view)

    async def _close_sale(self, sale: FlashSale) -> None:
        try:
            await self.store.close_sale(sale.id, str(sale.phase))
        except Exception:  # recovery closes it on the next start
            log.exception("closing sale %s failed", sale.id)

    def _stock_moved(self, sale: FlashSale) -> None:
        throttle = self._stock_throttle[sale.id]
        now = self.clock_ms()
        due = throttle.note(now)
        if due is None:
            return
        if due <= now:
            throttle.pushed(now)
            self._publish_sale(sale, droppable=True)
        else:
            self.plumbing.call_at(f"stock:{sale.id}", due, lambda: self._flush_stock(sale))

    def _flush_stock(self, sale: FlashSale) -> None:
        self._stock_throttle[sale.id].pushed(self.clock_ms())
        if sale.phase is Phase.LIVE:
            self._publish_sale(sale, droppable=True)

    # -- timers ----------------------------------------------------------------------------
    def arm(self, sale: FlashSale) -> None:
        deadline = sale.next_deadline()
        if deadline is None:
            self.plumbing.disarm(f"sale:{sale.id}")
            return
        self.plumbing.call_at(f"sale:{sale.id}", deadline, lambda: self._sale_timer(sale))

    def _sale_timer(self, sale: FlashSale) -> None:
        if sale.tick(self.clock_ms()):
            self._phase_moved(sale)
        else:
            self.arm(sale)
