"""Commerce adapter: the asyncio layer the gateway calls for products, flash sales, team buys.

Why this split: the rules (server.domain.flashsale / teambuy / catalog) are pure; this module
owns everything with time and I/O around them: the clock, timers (scheduled start, end, team
deadlines, 100 ms coalescing of progress pushes), the durable store and the bus.

The hot path of `buy`: validate, then reserve in memory in one synchronous step (the event
loop is single-threaded, so the check-and-decrement is atomic without a lock), then await the
durable write (group commit), and only then answer. A sold-out sale answers every later
attempt from memory without touching storage. If the durable write fails, the reservation is
given back before the caller hears `unavailable`.

Results are plain dicts ready for the wire. `buy` returns the order; `team_open`/`team_join`
return `{"team": ..., "order": ...}`; every refusal is a `SoukError` with a protocol code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from client_sdk.protocol import Code, room_channel, user_channel
from server.bus.base import Publish
from server.domain import fields
from server.domain.catalog import Catalog, Product, new_product
from server.domain.coupons import CouponBook
from server.domain.flashsale import OVER, FlashSale, Phase, sale_spec
from server.domain.order import Order
from server.domain.teambuy import Joined, Team, TeamBuyOffer, TeamStatus, offer_spec
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.base import CommerceStore, CouponConflict, KnownKey, StockConflict
from server.store.ledger import SqliteLedger
from server.store.sqlite import SqliteDatabase

log = logging.getLogger("souk.commerce")
_T = TypeVar("_T")

MAX_SNAPSHOT_SALES = 50
MAX_VIEW_TEAMS = 20  # an offer's view lists the joinable teams closest to full, not all
ABSENT_MS = 1000  # cluster: an id the store lacked is not asked for again within this time
ROOM_SYNC_MS = 1000  # cluster: a join lists the room's sales/offers in the store at most 1/s

# what the buyer reads when the store refuses (the code says why; see client_sdk Code)
REFUSALS: dict[str, str] = {
    Code.SOLD_OUT: "sold out",
    Code.LIMIT_REACHED: "you reached the per-buyer limit of this sale",
    Code.NOT_LIVE: "the sale has not started",
    Code.ENDED: "the sale or team closed before the order was recorded",
    Code.TEAM_FULL: "this team is full",
    Code.CONFLICT: "this key was used for another order",
    Code.ALREADY_IN_TEAM: "you are already in an open team of this offer",
}


def wall_ms() -> int:
    """Milliseconds since the epoch: the protocol's time unit."""
    return time.time_ns() // 1_000_000


def new_id(prefix: str, now_ms: int) -> str:
    """Time-ordered, unguessable ids (48 random bits: collisions are not a practical concern,
    and a primary-key clash would fail the write, never merge two orders)."""
    return f"{prefix}{now_ms:x}{secrets.token_hex(6)}"


class Commerce:
    """Products, flash sales, team buys and orders for every room of this process."""

    def __init__(
        self,
        db: SqliteDatabase | CommerceStore,
        publish: Publish,
        clock_ms: Callable[[], int] = wall_ms,
        *,
        order_batch: int = 1000,
    ) -> None:
        """`order_batch` caps the orders per batch write; 1 writes each order alone (the
        one-fsync-per-order baseline of the benchmark, together with group_commit=False)."""
        self.store: CommerceStore = SqliteLedger(db) if isinstance(db, SqliteDatabase) else db
        self.publish = publish
        self.clock_ms = clock_ms
        self.catalog = Catalog()
        self.sales: dict[str, FlashSale] = {}
        self.offers: dict[str, TeamBuyOffer] = {}
        self._sales_of: dict[str, list[str]] = {}
        self._offers_of: dict[str, list[str]] = {}
        self._announced_sold_out: set[str] = set()
        self._stock_throttle: dict[str, PushThrottle] = {}
        self._team_throttle: dict[str, PushThrottle] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._batch: list[tuple[FlashSale, Order, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._order_batch = max(1, order_batch)
        # operations (issue 10): the coupon book, set by the Operations adapter; None = no coupons
        self.coupons: CouponBook | None = None
        # cluster mode: loads a coupon issued on another node into the book before `buy`
        self.find_coupon: Callable[[str, str], Awaitable[None]] | None = None
        # issue 9: several nodes share the store; this node adopts what others created
        self.shared = bool(getattr(self.store, "shared", False))
        self._room_synced: dict[str, int] = {}  # room -> when its sales/offers were last listed
        self._offer_syncs: dict[str, asyncio.Task[None]] = {}
        self._offer_dirty: set[str] = set()
        self._absent: dict[str, int] = {}  # "kind:id" -> until when the store lacks it (ms)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the schema, load the ledger and resume: sales whose end passed while the
        process was down are ended (unsold stock back to the product), teams whose deadline
        passed fail, and every remaining deadline gets its timer."""
        self._loop = asyncio.get_running_loop()
        await self.store.migrate()
        state = await self.store.load()
        for product in state.products:
            self.catalog.add(product)
        now = self.clock_ms()
        for sale in state.sales:
            was_over = sale.phase in OVER
            before_left = sale.stock_left
            self._register_sale(sale)
            if sale.phase is Phase.SOLD_OUT:
                self._announced_sold_out.add(sale.id)
            if sale.tick(now) and sale.phase in OVER and not was_over:
                self._give_back(sale, before_left)
                await self.store.close_sale(sale.id, str(sale.phase))
                self._announce(sale)
        for offer in state.offers:
            self._register_offer(offer)
            for team in offer.expire(now):
                if not await self.store.fail_team(team.id):
                    # another node failed it and told its members (or it filled just in time)
                    await self._settle(offer, team.id)
                    continue
                for member in team.members:
                    self._publish(user_channel(member.user), "order", member.to_dict())
                self._publish_team(team, final=True)
        self._running = True
        for sale in self.sales.values():
            self._arm_sale(sale)
        for offer in self.offers.values():
            self._arm_offer(offer)

    async def stop(self) -> None:
        """Cancel timers and wait for writes already under way (the db stays open: its
        owner closes it)."""
        self._running = False
        self._flush_orders()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- products --------------------------------------------------------------------------
    async def product_create(self, shop: str, raw: Any) -> dict[str, Any]:
        """See `_product_create`; runs detached so a caller that goes away cannot cut it in half."""
        return await self._detached(self._product_create(shop, raw))

    async def _product_create(self, shop: str, raw: Any) -> dict[str, Any]:
        now = self.clock_ms()
        product = new_product(shop, raw, new_id("p", now), now)
        self.catalog.add(product)  # refuses a known id before touching storage
        try:
            await self.store.add_product(product)
        except sqlite3.IntegrityError:
            self.catalog.discard(product.id)
            raise SoukError(Code.CONFLICT, f"product {product.id} exists") from None
        except Exception:
            self.catalog.discard(product.id)
            log.exception("product write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the product; try again") from None
        return product.to_dict()

    def product(self, product_id: str) -> dict[str, Any] | None:
        product = self.catalog.get(product_id) if isinstance(product_id, str) else None
        return None if product is None else product.to_dict()

    def products(self, shop: str) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.catalog.of_shop(shop)]

    async def find_product(self, product_id: Any) -> dict[str, Any] | None:
        """`product`, and in a cluster a product another node created (adopted from the store)."""
        product = await self._find_product(product_id) if isinstance(product_id, str) else None
        return None if product is None else product.to_dict()

    async def _find_product(self, product_id: str) -> Product | None:
        product = self.catalog.get(product_id)
        if product is None and self._may_ask("product", product_id):
            stored = self._absent_if_none("product", product_id,
                                          await self.store.product(product_id))
            product = self.catalog.get(product_id)  # another task may have adopted it
            if product is None and stored is not None:
                self.catalog.add(stored)
                product = stored
        return product

    async def _product_for(self, product_id: str, shop: str | None) -> Product:
        product = await self._find_product(product_id)
        if product is None or (shop is not None and product.shop != shop):
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        return product

    def _give_back(self, sale: FlashSale | TeamBuyOffer, units: int) -> None:
        """Units back to the product as this node sees it (in a cluster the product may be one
        this node never loaded: the store keeps the true count)."""
        product = self.catalog.get(sale.product)
        if product is not None and units > 0:
            product.give_back(units)

    # -- flash sales -----------------------------------------------------------------------
    async def sale_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """See `_sale_create`; runs detached so a caller that goes away cannot cut it in half."""
        return await self._detached(self._sale_create(room, raw, shop))

    async def _sale_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """Create a sale (its stock is reserved from the product at once); `shop`, when given,
        must own the product."""
        room = fields.ident_value(room, "room")
        now = self.clock_ms()
        spec = sale_spec(raw, now)
        product = await self._product_for(spec.product, shop)
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
        self._register_sale(sale)
        if sale.tick(self.clock_ms()):  # time moved during the write
            self._phase_moved(sale)  # publishes and arms
        else:
            self._publish_sale(sale)
            self._arm_sale(sale)
        return self.sale_view(sale)

    async def sale_cancel(self, room: str, sale_id: Any) -> dict[str, Any]:
        """See `_sale_cancel`; runs detached so a caller that goes away cannot cut it in half."""
        return await self._detached(self._sale_cancel(room, sale_id))

    async def _sale_cancel(self, room: str, sale_id: Any) -> dict[str, Any]:
        sale = await self._sale_in(room, sale_id)
        units = sale.cancel(self.clock_ms())
        self._give_back(sale, units)
        self._disarm(f"sale:{sale.id}")
        try:
            await self.store.close_sale(sale.id, str(Phase.CANCELLED))
        except Exception:
            log.exception("sale cancel write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the cancel; try again") from None
        finally:
            self._publish_sale(sale)
        return self.sale_view(sale)

    async def _sale_in(self, room: str, sale_id: Any) -> FlashSale:
        sale_id = fields.ident_value(sale_id, "sale")
        sale = await self._find_sale(sale_id)
        if sale is None or sale.room != room:
            raise SoukError(Code.NOT_FOUND, f"no sale {sale_id} in this room")
        return sale

    async def _find_sale(self, sale_id: str) -> FlashSale | None:
        """A sale this node knows, or in a cluster one another node created after this node
        started: read from the store once and adopted (timers, snapshots, pushes)."""
        sale = self.sales.get(sale_id)
        if sale is None and self._may_ask("sale", sale_id):
            stored = self._absent_if_none("sale", sale_id, await self.store.sale(sale_id))
            sale = self.sales.get(sale_id)  # another task may have adopted it meanwhile
            if sale is None and stored is not None:
                await self._find_product(stored.product)
                self._register_sale(stored)
                if stored.phase is Phase.SOLD_OUT:
                    self._announced_sold_out.add(stored.id)
                self._arm_sale(stored)
                sale = stored
        return sale

    def _may_ask(self, kind: str, ident: str) -> bool:
        """Cluster: ask the store for an id this node does not know, unless the store lacked
        it a moment ago (a client sending made-up ids costs one query per second, not one
        per frame)."""
        if not self.shared or not fields.ID_RE.fullmatch(ident):
            return False
        until = self._absent.get(f"{kind}:{ident}")
        return until is None or until <= self.clock_ms()

    def _absent_if_none(self, kind: str, ident: str, found: _T) -> _T:
        if found is None:
            if len(self._absent) >= 10_000:
                self._absent.clear()
            self._absent[f"{kind}:{ident}"] = self.clock_ms() + ABSENT_MS
        return found

    async def locate_sale(self, sale_id: Any) -> str | None:
        """`sale_room`, adopting a sale another node created (None: unknown anywhere)."""
        if not isinstance(sale_id, str) or not fields.ID_RE.fullmatch(sale_id):
            return None
        sale = await self._find_sale(sale_id)
        return None if sale is None else sale.room

    async def locate_offer(self, offer_id: Any) -> str | None:
        """`offer_room`, adopting an offer another node created (None: unknown anywhere)."""
        if not isinstance(offer_id, str) or not fields.ID_RE.fullmatch(offer_id):
            return None
        offer = await self._find_offer(offer_id)
        return None if offer is None else offer.room

    async def buy(
        self, user_id: str, sale_id: Any, qty: Any, key: Any, name: str = "", coupon: Any = None
    ) -> dict[str, Any]:
        """Buy `qty` units, all or nothing; returns the order once it is durable.

        `coupon` (issue 10): reserved in `self.coupons` in the same synchronous step as the
        stock, written with the order (unique redemption row), released if the write fails."""
        user_id = fields.user_value(user_id)
        name = fields.name_value(name)
        sale = await self._find_sale(fields.ident_value(sale_id, "sale"))
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
                pending = self._pending.get(order.id)
                if pending is not None:
                    await self._wait_write(pending)
                return (sale.order_for(order.user, order.key) or order).to_dict()
            if coupon is not None:  # operations: no await between the stock and the coupon
                order = self._apply_coupon(sale, order, coupon, now)
            await self._wait_write(self._enqueue(sale, order))
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
        assert self._loop is not None, "Commerce.start() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending[order.id] = fut
        self._batch.append((sale, order, fut))
        if len(self._batch) >= self._order_batch:
            self._flush_orders()
        elif len(self._batch) == 1:
            self._loop.call_soon(self._flush_orders)
        return fut

    def _flush_orders(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._spawn(self._write_orders(batch))

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
            self._pending.pop(order.id, None)
            if error is None:
                # told here, not by the caller: a buyer that went away still has its order
                self._publish(user_channel(order.user), "order", order.to_dict())
                if order.coupon is not None and self.coupons is not None:
                    self.coupons.redeemed(order.coupon, order.id)
                    self._publish(user_channel(order.user), "coupon",
                                  {"id": order.coupon, "status": "redeemed", "order": order.id})
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
            elif sale.phase is Phase.SOLD_OUT and sale.id not in self._announced_sold_out:
                self._announced_sold_out.add(sale.id)
                self._announce(sale)  # the final 0: a phase change, never droppable

    def _unbuy(self, sale: FlashSale, order: Order) -> None:
        before = sale.phase
        give = sale.release(order, self.clock_ms())
        if self.shared:  # refused because the cluster sold out: stay sold out, say nothing
            sale.observe(self.store.stock_left(sale.id))
        if sale.phase is not before:
            self._phase_moved(sale)  # gives the unsold stock back if the sale is now over
        elif give:
            self._give_back(sale, give)  # the sale closed meanwhile
        elif sale.phase is Phase.LIVE:
            self._stock_moved(sale)

    @staticmethod
    async def _wait_write(task: asyncio.Future[Any]) -> None:
        """Wait for a durable write; a refusal of the store becomes the buyer's error with
        the store's reason (in a cluster the shared guard decides, not this node's memory).
        `KnownKey` passes through: the caller answers with the other node's order."""
        try:
            await asyncio.shield(task)
        except CouponConflict:
            raise SoukError(Code.CONFLICT, "this coupon was already used") from None
        except StockConflict as exc:
            raise SoukError(exc.code, REFUSALS.get(exc.code, str(exc))) from None
        except KnownKey:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("order write failed: %r", exc)
            raise SoukError(Code.UNAVAILABLE, "could not record the order; try again") from None

    async def orders_mine(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self.store.orders_of(fields.user_value(user_id), limit)

    async def sales_stats(self, room: str) -> dict[str, Any]:
        return await self.store.sales_stats(fields.ident_value(room, "room"))

    def sale_view(self, sale: FlashSale) -> dict[str, Any]:
        """A sale as viewers see it: the sale plus the product card."""
        view = sale.to_dict()
        product = self.catalog.get(sale.product)
        if product is not None:
            view["title"] = product.title
            view["image"] = product.image
            view["list_price"] = product.price
        return view

    def _register_sale(self, sale: FlashSale) -> None:
        self.sales[sale.id] = sale
        self._sales_of.setdefault(sale.room, []).append(sale.id)
        self._stock_throttle[sale.id] = PushThrottle()

    def _publish_sale(self, sale: FlashSale, *, droppable: bool = False) -> None:
        self._publish(room_channel(sale.room), "sale", self.sale_view(sale), droppable=droppable)

    def _phase_moved(self, sale: FlashSale) -> None:
        """A phase changed by time or by a failed write: tell the room, close if over."""
        if sale.phase is Phase.LIVE:  # e.g. back from sold_out: announce the next zero again
            self._announced_sold_out.discard(sale.id)
        if sale.phase in OVER:
            self._give_back(sale, sale.stock_left)
            self._disarm(f"sale:{sale.id}")
            self._spawn(self._close_sale(sale))
        else:
            self._arm_sale(sale)
        self._announce(sale)

    def _announce(self, sale: FlashSale) -> None:
        """A phase change (live, sold out, ended) goes to the room once. In a cluster every
        node applies it (its own timer, its own gate answers), and the one that claims
        (sale, phase) first in the shared store tells the room."""
        if not self.shared:
            self._publish_sale(sale)
            return
        self._spawn(self._claim_and_announce(sale, sale.phase))

    async def _claim_and_announce(self, sale: FlashSale, phase: Phase) -> None:
        try:
            won = await self.store.claim(f"sale:{sale.id}:{phase}")
        except Exception as exc:  # better twice than never
            log.warning("claiming %s of sale %s failed: %r", phase, sale.id, exc)
            won = True
        if won:
            view = self.sale_view(sale)
            view["phase"] = str(phase)
            self._publish(room_channel(sale.room), "sale", view)

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
            self._call_at(f"stock:{sale.id}", due, lambda: self._flush_stock(sale))

    def _flush_stock(self, sale: FlashSale) -> None:
        self._stock_throttle[sale.id].pushed(self.clock_ms())
        if sale.phase is Phase.LIVE:
            self._publish_sale(sale, droppable=True)

    def _arm_sale(self, sale: FlashSale) -> None:
        deadline = sale.next_deadline()
        if deadline is None:
            self._disarm(f"sale:{sale.id}")
            return
        self._call_at(f"sale:{sale.id}", deadline, lambda: self._sale_timer(sale))

    def _sale_timer(self, sale: FlashSale) -> None:
        if sale.tick(self.clock_ms()):
            self._phase_moved(sale)
        else:
            self._arm_sale(sale)

    # -- team buys -------------------------------------------------------------------------
    async def teambuy_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        """See `_teambuy_create`; runs detached so a caller that goes away cannot cut it in half."""
        return await self._detached(self._teambuy_create(room, raw, shop))

    async def _teambuy_create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        room = fields.ident_value(room, "room")
        now = self.clock_ms()
        spec = offer_spec(raw)
        product = await self._product_for(spec.product, shop)
        if spec.stock is not None:
            product.reserve(spec.stock)
        offer = TeamBuyOffer.create(new_id("tb", now), room, spec, product, now)
        try:
            await self.store.add_offer(offer)
        except Exception as exc:
            if spec.stock is not None:
                product.give_back(spec.stock)
            if isinstance(exc, StockConflict):
                raise SoukError(Code.CONFLICT, "not enough product stock") from None
            log.exception("offer write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the offer; try again") from None
        self._register_offer(offer)
        self._publish_offer(offer)
        return self.offer_view(offer)

    async def _offer(self, offer_id: Any) -> TeamBuyOffer:
        """The offer; in a cluster also brought up to date with the store (teams opened,
        joined, confirmed or failed on other nodes) before this node's rules run on it."""
        offer_id = fields.ident_value(offer_id, "offer")
        offer = await self._find_offer(offer_id)
        if offer is None:
            raise SoukError(Code.NOT_FOUND, f"no team-buy offer {offer_id}")
        if self.shared:
            await self._sync_offer(offer)
        return offer

    async def _find_offer(self, offer_id: str) -> TeamBuyOffer | None:
        """An offer this node knows, or in a cluster one another node created (adopted)."""
        offer = self.offers.get(offer_id)
        if offer is None and self._may_ask("offer", offer_id):
            stored = self._absent_if_none("offer", offer_id, await self.store.offer(offer_id))
            offer = self.offers.get(offer_id)
            if offer is None and stored is not None:
                await self._find_product(stored.product)
                self._register_offer(stored)
                self._arm_offer(stored)
                offer = stored
        return offer

    async def _sync_offer(self, offer: TeamBuyOffer) -> None:
        """Cluster: the offer's open teams and stock as stored; teams this node still thinks
        open but the store does not are read back one by one (confirmed or failed
        elsewhere: their members are free again)."""
        stored = await self.store.offer(offer.id)
        if stored is None:
            return
        pending = set(self._pending)
        gone = offer.sync(list(stored.teams.values()), stored.stock_left, pending)
        for team in gone:
            settled = await self.store.team(team.id)
            if settled is not None:
                offer.settle(settled, pending)
        self._arm_offer(offer)

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
                    offer = await self._find_offer(offer_id)
                    if offer is not None:
                        await self._sync_offer(offer)
                    if offer_id not in self._offer_dirty:
                        return
            except Exception:
                log.exception("following offer %s failed", offer_id)
            finally:
                self._offer_syncs.pop(offer_id, None)

        task = asyncio.ensure_future(run())
        self._offer_syncs[offer_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def team_open(self, user_id: str, name: str, offer_id: Any, key: Any) -> dict[str, Any]:
        """Open a team as its leader; returns {"team", "order"} once durable."""
        user_id, name = fields.user_value(user_id), fields.name_value(name)
        offer = await self._offer(offer_id)
        now = self.clock_ms()
        self._expire(offer, now)
        try:
            joined = offer.open(user_id, name, key, new_id("t", now), new_id("o", now), now)
        except SoukError as exc:
            return await self._replayed_elsewhere(offer, user_id, key, exc)
        if not joined.new:
            return await self._replayed(joined)
        return await self._make_durable(
            offer, joined, self.store.open_team(joined.team, joined.order)
        )

    async def team_join(
        self, user_id: str, name: str, offer_id: Any, team_id: Any, key: Any
    ) -> dict[str, Any]:
        """Join team `team_id`, or (None) the open team closest to full; returns {"team",
        "order"} once durable. The call that fills a team confirms every member's order."""
        user_id, name = fields.user_value(user_id), fields.name_value(name)
        offer = await self._offer(offer_id)
        now = self.clock_ms()
        self._expire(offer, now)
        try:
            joined = offer.join(user_id, name, key, team_id, new_id("o", now), now)
        except SoukError as exc:
            return await self._replayed_elsewhere(offer, user_id, key, exc)
        if not joined.new:
            return await self._replayed(joined)
        return await self._make_durable(offer, joined, self.store.join_team(joined.order))

    async def _make_durable(
        self, offer: TeamBuyOffer, joined: Joined, write: Coroutine[Any, Any, bool | None]
    ) -> dict[str, Any]:
        """Run a team write and everything that follows it as one task of its own, so that
        the commit, the events and `committed` happen even if the caller goes away; replays
        of the same key wait on that task."""
        task = asyncio.ensure_future(self._team_write(offer, joined, write))
        self._pending[joined.order.id] = task
        task.add_done_callback(lambda _: self._pending.pop(joined.order.id, None))
        await self._wait_write(task)
        return task.result()

    async def _team_write(
        self, offer: TeamBuyOffer, joined: Joined, write: Coroutine[Any, Any, bool | None]
    ) -> dict[str, Any]:
        team, order = joined.team, joined.order
        if self.shared:
            return await self._shared_team_write(offer, joined, write)
        try:
            confirmed = await write
        except BaseException:
            self._unjoin(offer, joined)
            raise
        offer.committed(joined)
        if confirmed is not None and confirmed != (team.status is TeamStatus.CONFIRMED):
            log.warning("team %s: ledger confirmed=%s, memory %s", team.id, confirmed, team.status)
        if team.status is TeamStatus.CONFIRMED:
            for member in team.members:
                self._publish(user_channel(member.user), "order", member.to_dict())
            self._publish_team(team, final=True)
        else:
            self._publish(user_channel(order.user), "order", order.to_dict())
            self._publish_team(team, final=False)
        if order.user == team.leader or team.status is TeamStatus.CONFIRMED:
            self._publish_offer(offer, droppable=True)  # a team appeared or left the list
        self._arm_offer(offer)
        current = team.member(order.user) or order
        return {"team": team.to_dict(), "order": current.to_dict()}

    async def _shared_team_write(
        self, offer: TeamBuyOffer, joined: Joined, write: Coroutine[Any, Any, bool | None]
    ) -> dict[str, Any]:
        """Cluster: the store counts the members (the team row locked), so the write the
        store says filled the team is the one, over all nodes, that tells every member and
        the room; this node's guess (`joined.filled`) only shaped the memory meanwhile.
        After the write the team is read back, so the answer and the events show the
        members that joined on other nodes too."""
        order = joined.order
        try:
            confirmed = await write
        except KnownKey:  # the key opened or joined a team on another node: that order
            offer.forget(joined)
            known = await self._known_team_order(offer, order.user, order.key)
            if known is None:
                raise SoukError(Code.UNAVAILABLE, "this key's order could not be read; "
                                "try again") from None
            return known
        except BaseException:
            offer.forget(joined)
            self._spawn(self._settle(offer, joined.team.id))
            raise
        stored = await self._read_team(joined.team.id)
        team = joined.team if stored is None else offer.settle(stored, set(self._pending))
        offer.committed(Joined(team, order, new=True, filled=bool(confirmed)))
        if confirmed:
            for member in team.members:
                self._publish(user_channel(member.user), "order", member.to_dict())
            self._publish_team(team, final=True)
        elif team.status is TeamStatus.OPEN:  # else the write that settled it told everyone
            self._publish(user_channel(order.user), "order", order.to_dict())
            self._publish_team(team, final=False)
        if order.user == team.leader or confirmed:
            self._publish_offer(offer, droppable=True)
        self._arm_offer(offer)
        current = team.member(order.user) or order
        return {"team": team.to_dict(), "order": current.to_dict()}

    async def _replayed_elsewhere(self, offer: TeamBuyOffer, user: str, key: Any,
                                  refusal: SoukError) -> dict[str, Any]:
        """Cluster: this node's rules refused (no such team, full, already in a team), but
        the key may be a retry of an open or join made on another node whose team has
        settled since (this node only keeps open teams): then that order is the answer."""
        if self.shared and refusal.code != Code.INVALID:
            known = await self._known_team_order(offer, user, fields.key_value(key))
            if known is not None:
                return known
        raise refusal

    async def _known_team_order(self, offer: TeamBuyOffer, user: str,
                                key: str) -> dict[str, Any] | None:
        """Cluster: a team key used on another node: its order and its team as stored (this
        node's memory only lists the open teams); None if the store has no such order."""
        known = await self.store.team_order(user, offer.id, key)
        stored = None if known is None or known.team is None else await self._read_team(known.team)
        if known is None or stored is None:
            return None
        team = offer.settle(stored, set(self._pending))
        current = team.member(known.user) or known
        return {"team": team.to_dict(), "order": current.to_dict()}

    async def _read_team(self, team_id: str) -> Team | None:
        try:
            return await self.store.team(team_id)
        except Exception:
            log.exception("reading team %s back failed", team_id)
            return None

    async def _settle(self, offer: TeamBuyOffer, team_id: str) -> None:
        stored = await self._read_team(team_id)
        if stored is not None:
            offer.settle(stored, set(self._pending))

    async def _replayed(self, joined: Joined) -> dict[str, Any]:
        pending = self._pending.get(joined.order.id)
        if pending is not None:
            await self._wait_write(pending)
        current = joined.team.member(joined.order.user) or joined.order
        return {"team": joined.team.to_dict(), "order": current.to_dict()}

    def _unjoin(self, offer: TeamBuyOffer, joined: Joined) -> None:
        offer.undo(joined)
        if joined.team.id in offer.teams:
            self._publish_team(joined.team, final=False)

    def _expire(self, offer: TeamBuyOffer, now: int) -> None:
        """Fail the teams whose deadline passed: holds released, members and room told."""
        failed = offer.expire(now)
        if self.shared:  # the store says which node failed it: that one tells everyone
            for team in failed:
                self._spawn(self._fail_shared(offer, team))
            self._arm_offer(offer)
            return
        for team in failed:
            self._spawn(self._fail_team(team))
            for member in team.members:
                self._publish(user_channel(member.user), "order", member.to_dict())
            self._publish_team(team, final=True)
        if failed:
            self._publish_offer(offer, droppable=True)
        self._arm_offer(offer)

    async def _fail_shared(self, offer: TeamBuyOffer, team: Team) -> None:
        """Cluster: every node's timer fires; the one whose transaction fails the team tells
        the members and the room; the others (and a team confirmed elsewhere just in time)
        take the stored state quietly."""
        try:
            won = await self.store.fail_team(team.id)
        except Exception:  # recovery fails it on the next start
            log.exception("failing team %s failed", team.id)
            return
        stored = await self._read_team(team.id)
        settled = team if stored is None else offer.settle(stored, set(self._pending))
        if not won:
            return
        for member in settled.members:
            self._publish(user_channel(member.user), "order", member.to_dict())
        self._publish_team(settled, final=True)
        self._publish_offer(offer, droppable=True)

    async def _fail_team(self, team: Team) -> None:
        try:
            await self.store.fail_team(team.id)
        except Exception:  # recovery fails it on the next start
            log.exception("failing team %s failed", team.id)

    def _arm_offer(self, offer: TeamBuyOffer) -> None:
        deadline = offer.next_deadline()
        if deadline is None:
            self._disarm(f"offer:{offer.id}")
            return
        self._call_at(f"offer:{offer.id}", deadline, lambda: self._expire(offer, self.clock_ms()))

    def _publish_team(self, team: Team, *, final: bool) -> None:
        """Team progress is coalesced per team; a final status goes out at once."""
        if final or team.status is not TeamStatus.OPEN:
            self._disarm(f"team:{team.id}")
            self._team_throttle.pop(team.id, None)
            self._publish(room_channel(team.room), "team", team.to_dict())
            return
        throttle = self._team_throttle.setdefault(team.id, PushThrottle())
        now = self.clock_ms()
        due = throttle.note(now)
        if due is None:
            return
        if due <= now:
            throttle.pushed(now)
            self._publish(room_channel(team.room), "team", team.to_dict(), droppable=True)
        else:
            self._call_at(f"team:{team.id}", due, lambda: self._flush_team(team))

    def _flush_team(self, team: Team) -> None:
        throttle = self._team_throttle.get(team.id)
        if throttle is None or team.status is not TeamStatus.OPEN:
            return
        throttle.pushed(self.clock_ms())
        self._publish(room_channel(team.room), "team", team.to_dict(), droppable=True)

    def offer_view(self, offer: TeamBuyOffer) -> dict[str, Any]:
        view = offer.to_dict()
        product = self.catalog.get(offer.product)
        if product is not None:
            view["title"] = product.title
            view["image"] = product.image
            view["list_price"] = product.price
        joinable = [t for t in offer.teams.values() if t.status is TeamStatus.OPEN and t.durable]
        joinable.sort(key=lambda t: (t.missing, t.opened_at))
        view["teams"] = [t.to_dict() for t in joinable[:MAX_VIEW_TEAMS]]
        return view

    def _publish_offer(self, offer: TeamBuyOffer, *, droppable: bool = False) -> None:
        """Creation is never droppable; later updates (a team opened or filled) are progress."""
        self._publish(
            room_channel(offer.room), "teambuy", self.offer_view(offer), droppable=droppable
        )

    def sale_room(self, sale_id: Any) -> str | None:
        """The room a sale belongs to, for the gateway's permission check (None: unknown)."""
        sale = self.sales.get(sale_id) if isinstance(sale_id, str) else None
        return None if sale is None else sale.room

    def offer_room(self, offer_id: Any) -> str | None:
        """The room a team-buy offer belongs to (None: unknown)."""
        offer = self.offers.get(offer_id) if isinstance(offer_id, str) else None
        return None if offer is None else offer.room

    def _register_offer(self, offer: TeamBuyOffer) -> None:
        self.offers[offer.id] = offer
        self._offers_of.setdefault(offer.room, []).append(offer.id)

    # -- snapshot --------------------------------------------------------------------------
    def room_snapshot(self, room: str) -> dict[str, Any]:
        """The commerce part of a `join` snapshot: the room's recent sales and its offers."""
        sale_ids = self._sales_of.get(room, [])[-MAX_SNAPSHOT_SALES:]
        return {
            "sales": [self.sale_view(self.sales[s]) for s in sale_ids],
            "teambuys": [self.offer_view(self.offers[o]) for o in self._offers_of.get(room, [])],
        }

    # -- cluster: what other nodes did -----------------------------------------------------
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
            sale = self.sales.get(ident)
            if sale is None:
                self._spawn(self._adopt_sale(ident))
            else:
                self._follow_sale(sale, event)
        elif kind == "teambuy":
            self._sync_later(ident)
        elif kind == "team" and isinstance(event.get("offer"), str):
            if fields.ID_RE.fullmatch(event["offer"]):
                self._sync_later(event["offer"])

    async def _adopt_sale(self, sale_id: str) -> None:
        try:
            await self._find_sale(sale_id)
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
            self._give_back(sale, sale.stock_left)
            self._disarm(f"sale:{sale.id}")
            self._disarm(f"stock:{sale.id}")
        elif sale.phase is Phase.SOLD_OUT:
            self._announced_sold_out.add(sale.id)
            self._disarm(f"stock:{sale.id}")
        else:
            self._arm_sale(sale)

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
                if sale_id not in self.sales:
                    await self._find_sale(sale_id)
            for offer_id in offer_ids:
                if offer_id not in self.offers:
                    await self._find_offer(offer_id)
        except Exception:  # the snapshot goes out with what this node knows
            log.exception("listing the commerce of room %s failed", room)

    # -- plumbing --------------------------------------------------------------------------
    def _publish(
        self, ch: str, type_: str, payload: dict[str, Any], *, droppable: bool = False
    ) -> None:
        try:
            self.publish(ch, type_, payload, droppable=droppable)
        except Exception:  # the bus must never undo a committed order
            log.exception("publish to %s failed", ch)

    def _call_at(self, name: str, at_ms: int, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop at wall time `at_ms` (replacing a timer of the same name)."""
        if self._loop is None or not self._running:
            return
        self._disarm(name)
        delay = max(0.0, (at_ms - self.clock_ms()) / 1000)

        def fire() -> None:
            self._timers.pop(name, None)
            try:
                fn()
            except Exception:
                log.exception("timer %s failed", name)

        self._timers[name] = self._loop.call_later(delay, fire)

    def _disarm(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    async def _detached(self, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run a change (memory, durable write, events) as a task of its own: cancelling the
        caller (a client that disconnects) must not stop it between the write and the state
        that follows it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)  # a refusal nobody waits for any more is not an error
        return await asyncio.shield(task)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
