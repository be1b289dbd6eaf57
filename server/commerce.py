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
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import Any

from client_sdk.protocol import Code, room_channel, user_channel
from server.bus.base import Publish
from server.domain import fields
from server.domain.catalog import Catalog, Product, new_product
from server.domain.flashsale import OVER, FlashSale, Phase, sale_spec
from server.domain.order import Order
from server.domain.teambuy import Joined, Team, TeamBuyOffer, TeamStatus, offer_spec
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.base import CommerceStore, StockConflict
from server.store.ledger import SqliteLedger
from server.store.sqlite import SqliteDatabase

log = logging.getLogger("souk.commerce")

MAX_SNAPSHOT_SALES = 50
MAX_VIEW_TEAMS = 20  # an offer's view lists the joinable teams closest to full, not all


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
                self._product_of(sale).give_back(before_left)
                await self.store.close_sale(sale.id, str(sale.phase))
                self._publish_sale(sale)
        for offer in state.offers:
            self._register_offer(offer)
            for team in offer.expire(now):
                await self.store.fail_team(team.id)
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

    def _product_for(self, product_id: str, shop: str | None) -> Product:
        product = self.catalog.get(product_id)
        if product is None or (shop is not None and product.shop != shop):
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        return product

    def _product_of(self, sale: FlashSale | TeamBuyOffer) -> Product:
        return self.catalog.require(sale.product)

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
        product = self._product_for(spec.product, shop)
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
        sale = self._sale_in(room, sale_id)
        units = sale.cancel(self.clock_ms())
        self._product_of(sale).give_back(units)
        self._disarm(f"sale:{sale.id}")
        try:
            await self.store.close_sale(sale.id, str(Phase.CANCELLED))
        except Exception:
            log.exception("sale cancel write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the cancel; try again") from None
        finally:
            self._publish_sale(sale)
        return self.sale_view(sale)

    def _sale_in(self, room: str, sale_id: Any) -> FlashSale:
        sale_id = fields.ident_value(sale_id, "sale")
        sale = self.sales.get(sale_id)
        if sale is None or sale.room != room:
            raise SoukError(Code.NOT_FOUND, f"no sale {sale_id} in this room")
        return sale

    async def buy(
        self, user_id: str, sale_id: Any, qty: Any, key: Any, name: str = ""
    ) -> dict[str, Any]:
        """Buy `qty` units, all or nothing; returns the order once it is durable."""
        user_id = fields.user_value(user_id)
        name = fields.name_value(name)
        sale = self.sales.get(fields.ident_value(sale_id, "sale"))
        if sale is None:
            raise SoukError(Code.NOT_FOUND, f"no sale {sale_id}")
        now = self.clock_ms()
        before = sale.phase
        order_id = new_id("o", now)
        try:
            order = sale.buy(user_id, name, qty, key, order_id, now)
        finally:
            if sale.phase is not before and sale.phase is not Phase.SOLD_OUT:
                self._phase_moved(sale)
        if order.id != order_id:  # a replay of a known key: same order, once it is durable
            pending = self._pending.get(order.id)
            if pending is not None:
                await self._wait_write(pending)
            return order.to_dict()
        await self._wait_write(self._enqueue(sale, order))
        return order.to_dict()

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
            self._pending.pop(order.id, None)
            if error is None:
                # told here, not by the caller: a buyer that went away still has its order
                self._publish(user_channel(order.user), "order", order.to_dict())
                moved[sale.id] = sale
                if not fut.done():
                    fut.set_result(None)
                continue
            self._unbuy(sale, order)
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: the buyer (or its replays) re-raise it
        for sale in moved.values():
            if sale.phase is not Phase.SOLD_OUT:
                self._stock_moved(sale)
            elif sale.id not in self._announced_sold_out:
                self._announced_sold_out.add(sale.id)
                self._publish_sale(sale)  # the final 0: a phase change, never droppable

    def _unbuy(self, sale: FlashSale, order: Order) -> None:
        before = sale.phase
        give = sale.release(order, self.clock_ms())
        if sale.phase is not before:
            self._phase_moved(sale)  # gives the unsold stock back if the sale is now over
        elif give:
            self._product_of(sale).give_back(give)  # the sale closed meanwhile
        else:
            self._stock_moved(sale)

    @staticmethod
    async def _wait_write(task: asyncio.Future[Any]) -> None:
        try:
            await asyncio.shield(task)
        except StockConflict:
            raise SoukError(
                Code.ENDED, "the sale or team closed before the order was recorded"
            ) from None
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
            self._product_of(sale).give_back(sale.stock_left)
            self._disarm(f"sale:{sale.id}")
            self._spawn(self._close_sale(sale))
        else:
            self._arm_sale(sale)
        self._publish_sale(sale)

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
        product = self._product_for(spec.product, shop)
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

    def _offer(self, offer_id: Any) -> TeamBuyOffer:
        offer_id = fields.ident_value(offer_id, "offer")
        offer = self.offers.get(offer_id)
        if offer is None:
            raise SoukError(Code.NOT_FOUND, f"no team-buy offer {offer_id}")
        return offer

    async def team_open(self, user_id: str, name: str, offer_id: Any, key: Any) -> dict[str, Any]:
        """Open a team as its leader; returns {"team", "order"} once durable."""
        user_id, name = fields.user_value(user_id), fields.name_value(name)
        offer = self._offer(offer_id)
        now = self.clock_ms()
        self._expire(offer, now)
        joined = offer.open(user_id, name, key, new_id("t", now), new_id("o", now), now)
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
        offer = self._offer(offer_id)
        now = self.clock_ms()
        self._expire(offer, now)
        joined = offer.join(user_id, name, key, team_id, new_id("o", now), now)
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
        for team in failed:
            self._spawn(self._fail_team(team))
            for member in team.members:
                self._publish(user_channel(member.user), "order", member.to_dict())
            self._publish_team(team, final=True)
        if failed:
            self._publish_offer(offer, droppable=True)
        self._arm_offer(offer)

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
