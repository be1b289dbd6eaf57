"""The asyncio adapter for lucky draws (福袋): entries, the timed close, the result, the prizes
(docs/draws.md).

Why this shape: the rules are pure (server/domain/draw.py: who may enter, the phases, the
winner function); this layer adds the clock, the seed, timers, durability, the bus and the
beacon. It follows the pattern of orders:

- an entry is decided in one synchronous step (the user is not already entering), joins the
  batch written at the end of this loop iteration (one transaction for every entry that
  arrived meanwhile), and is acknowledged only once that transaction is durable;
- the entrant count reaches the room coalesced (at most every `push_ms`), phase changes at once;
- at `ends_at` every node that knows the draw tries to close it; the store lets one win
  (server/store/draws.py), which draws the winners, commits them with their prizes in one
  transaction, and only then announces them. A node killed at any moment leaves the record
  in a state the next start (or, in a cluster, another node after the lease) finishes from:
  `open` is closed on time, `drawing` is drawn again (deterministically, with the same
  entrants, seed and beacon round), `done` but unannounced is announced.

Other features are reached only through what the composition root hands in (membership of a
group, bans, the viewer count, product stock, the coupon book), never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

from client_sdk.protocol import Code, user_channel
from server.bus.base import Publish
from server.cluster.notices import NoSync, Notice, Sync
from server.domain import fields
from server.domain.coupons import Coupon
from server.domain.draw import FINAL, SEED_BYTES, Draw, Phase, Stays, Winner, draw_spec
from server.domain.order import Order
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.draws import DrawClosed, DrawStore
from server.store.ledger import StockConflict

log = logging.getLogger("souk.draws")

LEASE_MS: Final = 10_000  # a closer silent this long is taken over by another node
RETRY_MS: Final = 1_000  # a close whose write failed is tried again after this
KEEP_MS: Final = 3_600_000  # finished draws stay in memory (snapshots) this long
SNAPSHOT_DONE_MS: Final = 600_000  # a finished draw shows in the room's snapshot this long
MAX_LIST: Final = 20
MAX_OPEN: Final = 10  # open draws per room or group: each holds a timer and entries in memory
PUBLISHED_KEPT: Final = 16  # closed entrant lists kept ready to serve (they never change)
BEACON_WAIT_S: Final = 5.0  # after the round is due


class Beacon(Protocol):
    """Public randomness (server/engagement/beacon.py `HttpBeacon`)."""

    url: str

    async def info(self) -> tuple[float, float]: ...
    def next_round(self, at_ms: int) -> tuple[int, float]: ...
    async def randomness(self, round_: int, due_s: float, wait_s: float) -> str: ...
    async def close(self) -> None: ...


@dataclass
class _Entry:
    user: str
    name: str
    via: str
    ts: int
    done: asyncio.Future[bool]  # True: this write entered the user (False: already in)


def _new_id(now_ms: int) -> str:
    return f"d{now_ms:x}{secrets.token_hex(5)}"


class Draws:
    """Every lucky draw this process knows, and the entries on their way to the store."""

    def __init__(
        self,
        store: DrawStore,
        publish: Publish,
        clock_ms: Callable[[], int],
        *,
        member_of: Callable[[str, str], Awaitable[bool]],
        banned: Callable[[str, str], bool],
        viewers: Callable[[str], int],
        hold_units: Callable[[str, str | None, int], Awaitable[dict[str, Any]]],
        release_units: Callable[[str, int], None],
        coupons_issued: Callable[[list[Coupon]], None],
        beacon: Beacon | None = None,
        sync: Sync | None = None,
        push_ms: int = 1000,
        lease_ms: int = LEASE_MS,
    ) -> None:
        """`member_of(user, group)`: a member now (in a cluster, on any node); `banned(ch,
        user)`; `viewers(ch)`: the channel's viewer count now; `hold_units(product, shop, n)`
        takes n units of a product's stock in memory (the product's view, or a refusal) and
        `release_units` gives them back; `coupons_issued`: prize coupons are durable (the
        coupon book takes them and announces them to their winners and the other nodes)."""
        self.store = store
        self.publish = publish
        self.clock_ms = clock_ms
        self.member_of = member_of
        self.banned = banned
        self.viewers = viewers
        self.hold_units = hold_units
        self.release_units = release_units
        self.coupons_issued = coupons_issued
        self.beacon = beacon
        self.sync = sync if sync is not None else NoSync()
        self.push_ms = push_ms
        self.lease_ms = lease_ms + (int((BEACON_WAIT_S + 35) * 1000) if beacon else 0)
        self.node = secrets.token_hex(6)
        self.stays = Stays()
        self.draws: dict[str, Draw] = {}
        self.of_channel: dict[str, list[str]] = {}
        self.keyword_draws: dict[str, list[str]] = {}  # channel -> open draws with a keyword
        self._pending: dict[str, list[_Entry]] = {}
        self._entering: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._flush_armed = False
        self._throttle: dict[str, PushThrottle] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self.closes = 0  # draws this node drew (for tests and the benchmark)
        self._published: dict[str, dict[str, Any]] = {}  # draw -> its final entrant list

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the record and finish what a previous run left: re-arm open draws (one whose
        end passed while the process was down closes at once), draw again the ones caught
        mid-draw, announce the ones settled but not announced."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        await self.sync.start()
        now = self.clock_ms()
        state = await self.store.load(now)
        for d in state.active + state.unannounced + state.recent:
            self._register(d)
        for d in state.active:
            if d.phase is Phase.OPEN:
                self._arm(d)
            else:  # caught mid-draw: alone, finish it now; in a cluster, after the lease
                self._arm_close(d.id, now if not self.store.shared else now + self.lease_ms)
        for d in state.unannounced:
            self._spawn(self._announce_again(d))
        self._timers["sweep"] = self._loop.call_later(10, self._sweep)
        self.sync.run(self.apply_notice)

    async def stop(self) -> None:
        self._running = False
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.sync.stop()
        if self.beacon is not None:
            with contextlib.suppress(Exception):
                await self.beacon.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("draw task failed", exc_info=task.exception())

    def _register(self, d: Draw) -> None:
        known = d.id in self.draws
        self.draws[d.id] = d
        if not known:
            self.of_channel.setdefault(d.channel, []).append(d.id)
        kw = self.keyword_draws.setdefault(d.channel, [])
        if d.condition.keyword is not None and d.phase is Phase.OPEN and d.id not in kw:
            kw.append(d.id)
        self._throttle.setdefault(d.id, PushThrottle(self.push_ms))

    def _finished(self, d: Draw) -> None:
        kw = self.keyword_draws.get(d.channel)
        if kw is not None and d.id in kw:
            kw.remove(d.id)
        self._disarm(d.id)

    def _sweep(self) -> None:
        """Every 10 s: forget stays past their grace and draws finished long ago."""
        now = self.clock_ms()
        self.stays.sweep(now)
        for d in list(self.draws.values()):
            if d.phase in FINAL and (d.closed_at or d.ends_at) < now - KEEP_MS:
                del self.draws[d.id]
                self._throttle.pop(d.id, None)
                ids = self.of_channel.get(d.channel)
                if ids is not None and d.id in ids:
                    ids.remove(d.id)
        if self._running and self._loop is not None:
            self._timers["sweep"] = self._loop.call_later(10, self._sweep)

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, d: Draw) -> None:
        self._arm_close(d.id, d.ends_at)

    def _arm_close(self, draw_id: str, at_ms: int) -> None:
        if not self._running or self._loop is None:
            return
        self._disarm(draw_id)
        delay = max(0.0, (at_ms - self.clock_ms()) / 1000)

        def fire() -> None:
            self._timers.pop(draw_id, None)
            self._spawn(self._close(draw_id))

        self._timers[draw_id] = self._loop.call_later(delay, fire)

    def _disarm(self, draw_id: str) -> None:
        handle = self._timers.pop(draw_id, None)
        if handle is not None:
            handle.cancel()

    # -- creation and cancel ---------------------------------------------------------------
    async def create(self, shop: str, scope: str, target: str, by: str, raw: Any) -> dict[str, Any]:
        """A new draw, open from now until `duration_s` later; its commitment is published at
        once, its seed only when it is done. A product prize holds `winners` units."""
        now = self.clock_ms()
        spec = draw_spec(raw, scope, now)
        running = [i for i in self.of_channel.get(f"{scope}:{target}", ()) if self.draws[i].phase not in FINAL]
        if len(running) >= MAX_OPEN:
            raise SoukError(Code.CONFLICT, f"{MAX_OPEN} draws are already running here")
        prize = spec.prize
        held = 0
        if prize.product is not None:
            product = await self.hold_units(prize.product, shop, spec.winners)
            held = spec.winners
            prize = type(prize)(product=prize.product, title=str(product.get("title", "")),
                                currency=str(product.get("currency", "")))
            spec = type(spec)(spec.title, prize, spec.winners, spec.duration_s, spec.condition)
        d = Draw.create(_new_id(now), shop, scope, target, spec, by,
                        secrets.token_bytes(SEED_BYTES).hex(), now)
        try:
            await self.store.add_draw(d, held)
        except StockConflict:
            self._give_back(d, held)
            raise SoukError(Code.CONFLICT, "not enough product stock for the prizes") from None
        except Exception:
            self._give_back(d, held)
            log.exception("draw write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the draw; try again") from None
        self._register(d)
        self._arm(d)
        self._push(d)
        self.sync.notify("draw", d=d.id)
        return d.view()

    def _give_back(self, d: Draw, units: int) -> None:
        if units and d.prize.product is not None:
            self.release_units(d.prize.product, units)

    async def cancel(self, d: Draw) -> dict[str, Any]:
        """An open draw stops: nobody wins, the held units go back to stock."""
        if d.phase is not Phase.OPEN:
            raise SoukError(Code.CONFLICT, f"this draw is {d.phase}; only an open draw is cancelled")
        try:
            cancelled = await self.store.cancel(d.id)
        except Exception:
            log.exception("draw cancel failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the cancel; try again") from None
        if not cancelled:  # closed meanwhile (on another node): the record says what it is
            await self._reload(d.id)
            raise SoukError(Code.CONFLICT, f"this draw is {self.draws[d.id].phase}")
        d.cancel()
        self._give_back(d, d.winners if d.prize.product is not None else 0)
        self._finished(d)
        self._push(d)
        self.sync.notify("settled", d=d.id)
        return d.view()

    # -- finding ---------------------------------------------------------------------------
    async def find(self, draw_id: Any) -> Draw:
        """The draw, loaded from the record when this node does not know it (a cluster: made
        on another node)."""
        did = fields.ident_value(draw_id, "draw")
        d = self.draws.get(did)
        if d is None and self.store.shared:
            await self._reload(did)
            d = self.draws.get(did)
        if d is None:
            raise SoukError(Code.NOT_FOUND, f"no draw {did}")
        return d

    async def _reload(self, draw_id: str) -> None:
        """Bring this node's copy in step with the record (adopt, or learn the close)."""
        stored = await self.store.draw(draw_id)
        if stored is None:
            return
        known = self.draws.get(draw_id)
        if known is None:
            if stored.phase in (Phase.OPEN, Phase.DRAWING):
                stored.entered = set()
            self._register(stored)
            if stored.phase is Phase.OPEN:
                self._arm(stored)
            elif stored.phase is Phase.DRAWING:
                self._arm_close(draw_id, self.clock_ms() + self.lease_ms)
            return
        if known.phase in FINAL:
            return
        if stored.phase in FINAL or stored.phase is not known.phase:
            known.phase, known.result, known.beacon = stored.phase, stored.result, stored.beacon
            known.closed_at, known.digest = stored.closed_at, stored.digest
            known.viewers_at_close = stored.viewers_at_close
        known.entrants = max(known.entrants, stored.entrants)
        if known.phase in FINAL:
            self._finished(known)

    # -- entering --------------------------------------------------------------------------
    async def enter(self, d: Draw, user: str, name: str, *, customer: bool, via: str = "op",
                    by_chat: bool = False) -> dict[str, Any]:
        """Enter `user` (once; entering again answers the same). Acknowledged only once the
        entry is durable; `ended` when the draw closed first."""
        key = (d.id, user)
        inflight = self._entering.get(key)
        if inflight is not None:  # the same user on another connection, meanwhile
            await asyncio.shield(inflight)
            return self._entered(d, False)
        now = self.clock_ms()
        banned = self.banned(d.channel, user)
        watched = self.stays.watched_ms(d.target, user, now) if d.condition.watch_s else None
        group = d.member_group()
        member = await self.member_of(user, group) if group is not None and customer else None
        now = self.clock_ms()
        inflight = self._entering.get(key)
        if inflight is not None:
            await asyncio.shield(inflight)
            return self._entered(d, False)
        if not d.check_entry(user, now, customer=customer, banned=banned, watched_ms=watched,
                             member=member, by_chat=by_chat):
            return self._entered(d, False)
        assert self._loop is not None
        done: asyncio.Future[bool] = self._loop.create_future()
        self._entering[key] = done
        self._pending.setdefault(d.id, []).append(_Entry(user, name[:64], via, now, done))
        if not self._flush_armed:
            self._flush_armed = True
            self._loop.call_soon(self._flush)
        try:
            new = await asyncio.shield(done)
        finally:
            if self._entering.get(key) is done:
                del self._entering[key]
        self.publish(user_channel(user), "draw_entered", {"draw": d.id, d.scope: d.target})
        return self._entered(d, new)

    @staticmethod
    def _entered(d: Draw, new: bool) -> dict[str, Any]:
        return {"draw": d.id, "entered": True, "new": new, "entrants": d.entrants}

    def _flush(self) -> None:
        """End of a loop iteration: one durable write per draw for the entries that came."""
        self._flush_armed = False
        pending, self._pending = self._pending, {}
        for draw_id, batch in pending.items():
            self._spawn(self._write_entries(draw_id, batch))

    async def _write_entries(self, draw_id: str, batch: list[_Entry]) -> None:
        d = self.draws.get(draw_id)
        try:
            new, count = await self.store.add_entries(
                draw_id, [(e.user, e.name, e.via, e.ts) for e in batch])
        except DrawClosed:
            for e in batch:
                _settle(e.done, SoukError(Code.ENDED, "this draw is closed", draw=draw_id))
            if d is not None and d.phase is Phase.OPEN and self.store.shared:
                await self._reload(draw_id)
            return
        except Exception:
            log.exception("entry write failed (%d entries)", len(batch))
            for e in batch:
                _settle(e.done, SoukError(Code.UNAVAILABLE, "could not record the entry; try again"))
            return
        fresh = set(new)
        if d is not None:
            for e in batch:
                d.entered.add(e.user)
            if count > d.entrants:
                d.entrants = count
                self._push(d, droppable=True)
        for e in batch:
            _settle(e.done, e.user in fresh)

    def on_chat(self, ch: str, user: str, name: str, text: str, *, customer: bool) -> None:
        """A chat message was posted: a keyword it carries enters its sender (in the
        background; the chat itself is a chat whatever happens). Costs one dict lookup for
        a channel without a keyword draw."""
        ids = self.keyword_draws.get(ch)
        if not ids or not customer:
            return
        for draw_id in list(ids):
            d = self.draws.get(draw_id)
            if d is not None and d.chat_enters(text) and user not in d.entered:
                self._spawn(self._enter_by_chat(d, user, name))

    async def _enter_by_chat(self, d: Draw, user: str, name: str) -> None:
        try:
            await self.enter(d, user, name, customer=True, via="keyword", by_chat=True)
        except SoukError as exc:  # not (yet) allowed: tell the sender why, privately
            self.publish(user_channel(user), "draw_refused",
                         {"draw": d.id, "code": exc.code, "message": str(exc)})

    # -- presence (watch time) -------------------------------------------------------------
    def joined(self, room: str, user: str) -> None:
        self.stays.joined(room, user, self.clock_ms())

    def left(self, room: str, user: str) -> None:
        self.stays.left(room, user, self.clock_ms())

    # -- the close -------------------------------------------------------------------------
    async def _close(self, draw_id: str) -> None:
        """Close the draw, draw it, grant the prizes, announce. Safe to call on every node and
        again after a failure: the store lets one close and one result through."""
        d = self.draws.get(draw_id)
        if d is None or d.phase in FINAL or draw_id in self._closing:
            return
        self._closing.add(draw_id)
        try:
            await self._close_once(d)
        except Exception:
            log.exception("closing draw %s failed; trying again", draw_id)
            self._arm_close(draw_id, self.clock_ms() + RETRY_MS)
        finally:
            self._closing.discard(draw_id)

    async def _close_once(self, d: Draw) -> None:
        now = self.clock_ms()
        if d.phase is Phase.OPEN and now < d.ends_at:  # a timer that fired early
            self._arm(d)
            return
        self._flush()  # entries that arrived in this iteration go in before the list is fixed
        # the list is fixed at `at`, and the round is planned from that same instant: the
        # beacon's info (asked once) is had first, so nothing waits between the two
        ready = await self._beacon_ready() if self.beacon is not None else None
        at = self.clock_ms()
        plan = self._beacon_plan(at, ready) if self.beacon is not None else None
        viewers = self.viewers(d.channel) if d.scope == "room" else 0
        lease = self.lease_ms if self.store.shared else 0  # alone, a close left over is ours
        claim = await self.store.claim(d.id, self.node, at, viewers, lease, plan)
        if claim is None:  # another node is closing it (or did): look again after its lease
            await self._reload(d.id)
            if d.phase not in FINAL:
                self._arm_close(d.id, self.clock_ms() + self.lease_ms + 500)
            return
        if d.phase is Phase.OPEN:
            d.phase = Phase.DRAWING
        d.closed_at, d.digest, d.entrants = claim.closed_at, claim.digest, len(claim.entries)
        d.viewers_at_close = claim.viewers
        d.entered = set(claim.entries)
        self._finished_keyword(d)
        self._push(d)
        randomness, beacon = await self._beacon_value(claim.beacon)
        winners = d.draw(claim.entries, randomness)
        orders, coupons = self._prizes(d, winners)
        if not await self.store.settle(d, winners, beacon, orders, coupons, self.clock_ms()):
            await self._reload(d.id)  # another node settled it first, and announces it
            return
        d.settle(winners, beacon)
        self._give_back(d, d.winners - len(winners) if d.prize.product is not None else 0)
        self.closes += 1
        self._announce(d, orders, coupons)
        await self.store.announced(d.id)

    def _finished_keyword(self, d: Draw) -> None:
        kw = self.keyword_draws.get(d.channel)
        if kw is not None and d.id in kw:
            kw.remove(d.id)

    def _prizes(self, d: Draw, winners: list[Winner]) -> tuple[list[Order], list[Coupon]]:
        now = self.clock_ms()
        if d.prize.product is not None:
            room = d.target if d.scope == "room" else ""
            return [Order(id=f"o{now:x}{secrets.token_hex(6)}", user=w.user, room=room,
                          product=d.prize.product, qty=1, price=0, currency=d.prize.currency,
                          key=d.id,
                          created_at=now, name=w.name, draw=d.id) for w in winners], []
        assert d.prize.coupon is not None
        return [], [Coupon(f"c{now:x}{secrets.token_hex(5)}", d.shop, w.user, d.prize.coupon, now,
                           "draw") for w in winners]

    def _announce(self, d: Draw, orders: list[Order], coupons: list[Coupon]) -> None:
        """After the result is durable: the room, then each winner privately."""
        self._finished(d)
        self._push(d)
        for o in orders:
            self.publish(user_channel(o.user), "order", o.to_dict())
        if coupons:  # the coupon book announces them: to each winner, and to the other nodes
            self.coupons_issued(coupons)
        self.sync.notify("settled", d=d.id)

    async def _announce_again(self, d: Draw) -> None:
        """A draw settled by a run that died before announcing it: announce it now (once,
        whichever node gets there first)."""
        if not await self.store.announced(d.id):
            return
        orders, coupons = await self._stored_prizes(d)
        self._announce(d, orders, coupons)

    async def _stored_prizes(self, d: Draw) -> tuple[list[Order], list[Coupon]]:
        return await self.store.prizes(d.id, [w.user for w in d.result])

    # -- the beacon ------------------------------------------------------------------------
    async def _beacon_ready(self) -> str | None:
        """Ask the beacon its genesis and period (once; bounded): None when had, else why not."""
        assert self.beacon is not None
        try:
            await asyncio.wait_for(self.beacon.info(), 3.0)
        except Exception as exc:
            return _why(exc)
        return None

    def _beacon_plan(self, at: int, unavailable: str | None) -> dict[str, Any]:
        """Which round will be mixed in: the first published after the close at `at`."""
        assert self.beacon is not None
        if unavailable is not None:
            return {"url": self.beacon.url, "status": "unavailable", "error": unavailable}
        round_, due = self.beacon.next_round(at)
        return {"url": self.beacon.url, "round": round_, "due": due, "status": "pending"}

    async def _beacon_value(self, plan: dict[str, Any] | None) -> tuple[str | None, dict[str, Any] | None]:
        """The randomness of the planned round, or the draw goes on without (said in its
        result: `status` `unavailable` with the reason)."""
        if plan is None or self.beacon is None:
            return None, plan
        if plan.get("status") != "pending":
            return None, plan
        try:
            value = await self.beacon.randomness(int(plan["round"]), float(plan["due"]),
                                                 BEACON_WAIT_S)
        except Exception as exc:
            return None, {"url": plan["url"], "round": plan["round"], "status": "unavailable",
                          "error": _why(exc)}
        return value, {"url": plan["url"], "round": plan["round"], "status": "ok",
                       "randomness": value}

    # -- the room sees ---------------------------------------------------------------------
    def _push(self, d: Draw, *, droppable: bool = False) -> None:
        """The `draw` event: phase changes at once, entrant counts at most every `push_ms`."""
        if not droppable:
            self.publish(d.channel, "draw", d.view())
            self._throttle.setdefault(d.id, PushThrottle(self.push_ms)).pushed(self.clock_ms())
            return
        t = self._throttle.setdefault(d.id, PushThrottle(self.push_ms))
        now = self.clock_ms()
        at = t.note(now)
        if at is None:
            return
        if at <= now:
            t.pushed(now)
            self.publish(d.channel, "draw", d.view(), droppable=True)
            return
        assert self._loop is not None

        def later() -> None:
            if t.pending:
                t.pushed(self.clock_ms())
                if d.phase is Phase.OPEN:
                    self.publish(d.channel, "draw", d.view(), droppable=True)

        self._loop.call_later((at - now) / 1000, later)

    def snapshot(self, scope: str) -> Callable[[str], dict[str, Any]]:
        """The `draws` part of a room's or group's `join` snapshot: open and drawing draws,
        and the ones finished in the last minutes (a page reloaded after the result)."""

        def part(target: str) -> dict[str, Any]:
            now = self.clock_ms()
            out = []
            for did in self.of_channel.get(f"{scope}:{target}", ()):
                d = self.draws[did]
                if d.phase not in FINAL or (d.closed_at or d.ends_at) >= now - SNAPSHOT_DONE_MS:
                    out.append(d.view())
            return {"draws": out}

        return part

    async def listing(self, scope: str, target: str, user: str) -> list[dict[str, Any]]:
        """The `draws` op: the latest draws of a room or group, newest first, each with the
        caller's own state (`entered`, `won`, and for a watch-time draw `watched_s`)."""
        stored = await self.store.draws_of(scope, target, MAX_LIST)
        views = []
        draws = [self.draws.get(s.id) or s for s in stored]
        entered = await self.store.entered(user, [d.id for d in draws if d.phase is not Phase.CANCELLED])
        now = self.clock_ms()
        for d in draws:
            v = d.view()
            v["entered"] = d.id in entered or user in d.entered
            if d.phase is Phase.DONE:
                v["won"] = any(w.user == user for w in d.result)
            if d.condition.watch_s is not None and d.phase is Phase.OPEN:
                v["watched_s"] = self.stays.watched_ms(d.target, user, now) // 1000
            views.append(v)
        return views

    async def entrants(self, d: Draw) -> dict[str, Any]:
        """The published entrant list (`GET /api/draws/<id>/entrants`): hashes only, and only
        once the list is fixed."""
        if d.phase is Phase.OPEN and self.store.shared:  # closed on another node?
            await self._reload(d.id)
        if d.phase in (Phase.OPEN, Phase.CANCELLED):
            raise SoukError(Code.CONFLICT, "the entrant list is published when the draw closes",
                            phase=str(d.phase))
        if d.id in self._published:
            return self._published[d.id]
        hashes = await self.store.entrant_hashes(d.id)
        out: dict[str, Any] = {"draw": d.id, "phase": str(d.phase), "commitment": d.commitment,
                               "digest": d.digest, "winners_count": d.winners,
                               "entrants": hashes}
        if d.phase is Phase.DONE:
            out["seed"] = d.seed
            out["winners"] = [w.hash for w in d.result]
            out["beacon"] = d.beacon
            if len(self._published) >= PUBLISHED_KEPT:
                del self._published[next(iter(self._published))]
            self._published[d.id] = out
        return out

    async def room_stats(self, room: str) -> dict[str, Any]:
        stats = await self.store.room_stats(room)
        stats["list"] = [d.view() for d in await self.store.draws_of("room", room, MAX_LIST)]
        return stats

    # -- the cluster -----------------------------------------------------------------------
    def on_remote(self, ch: str, event: dict[str, Any]) -> None:
        """Another node's `draw` event on a channel this node follows: counts and phases."""
        if event.get("type") != "draw" or not isinstance(event.get("id"), str):
            return
        d = self.draws.get(event["id"])
        if d is None or (event.get("phase") != d.phase and d.phase not in FINAL):
            self._spawn(self._reload(event["id"]))
            return
        count = event.get("entrants")
        if isinstance(count, int) and count > d.entrants:
            d.entrants = count

    async def apply_notice(self, n: Notice) -> None:
        """Another node created or finished a draw: adopt it (and arm its close) or learn the
        result. Never publishes."""
        if n.get("k") in ("draw", "settled") and isinstance(n.get("d"), str):
            await self._reload(n["d"])


def _settle(fut: asyncio.Future[bool], result: bool | BaseException) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _why(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
