"""Team buys: offers, teams opened and joined, their durable writes, deadlines and pushes.

Why a module of its own: an offer's state (its teams' deadline timers, the per-team push
throttle) and the write path of a team order belong together and apart from flash sales;
the rules themselves are pure (server.domain.teambuy). In a cluster the store, not this
node's memory, decides which write filled or failed a team, so the shared-write branches
(`_shared_team_write`, `_fail_shared`, `_known_team_order`) live here, next to the flow
they guard.

Results are plain dicts ready for the wire: `open`/`join` return `{"team": ..., "order": ...}`;
every refusal is a `SoukError` with a protocol code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from client_sdk.protocol import Code, room_channel
from server.commerce.absent import AbsentIds
from server.commerce.plumbing import Plumbing, new_id
from server.commerce.products import Products
from server.commerce.writes import Pending, wait_write
from server.domain import fields
from server.domain.events import TeamBuyOpened
from server.domain.teambuy import Joined, Team, TeamBuyOffer, TeamStatus, offer_spec
from server.domain.throttle import PushThrottle
from server.errors import SoukError
from server.store.ledger import CommerceStore, KnownKey, StockConflict

log = logging.getLogger("souk.commerce")

MAX_VIEW_TEAMS = 20  # an offer's view lists the joinable teams closest to full, not all


class TeamBuys:
    """Every team-buy offer of this process, with its open teams."""

    def __init__(
        self,
        store: CommerceStore,
        plumbing: Plumbing,
        products: Products,
        absent: AbsentIds,
        pending: Pending,
        *,
        shared: bool,
    ) -> None:
        self.store = store
        self.plumbing = plumbing
        self.clock_ms = plumbing.clock_ms
        self.products = products
        self.absent = absent
        self.pending = pending
        self.shared = shared
        self.offers: dict[str, TeamBuyOffer] = {}
        self.offers_of: dict[str, list[str]] = {}
        self._team_throttle: dict[str, PushThrottle] = {}

    # -- recovery --------------------------------------------------------------------------
    async def resume(self, offers: list[TeamBuyOffer], now: int) -> None:
        """Offers loaded from the ledger; teams whose deadline passed while the process was
        down fail."""
        for offer in offers:
            self.register(offer)
            for team in offer.expire(now):
                if not await self.store.fail_team(team.id):
                    # another node failed it and told its members (or it filled just in time)
                    await self._settle(offer, team.id)
                    continue
                for member in team.members:
                    self.plumbing.order(member)
                self._publish_team(team, final=True)

    def arm_all(self) -> None:
        for offer in self.offers.values():
            self.arm(offer)

    # -- offers ----------------------------------------------------------------------------
    async def create(self, room: str, raw: Any, shop: str | None = None) -> dict[str, Any]:
        room = fields.ident_value(room, "room")
        now = self.clock_ms()
        spec = offer_spec(raw)
        product = await self.products.product_for(spec.product, shop)
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
        self.register(offer)
        self._publish_offer(offer)
        return self.view(offer)

    async def _offer(self, offer_id: Any) -> TeamBuyOffer:
        """The offer; in a cluster also brought up to date with the store (teams opened,
        joined, confirmed or failed on other nodes) before this node's rules run on it."""
        offer_id = fields.ident_value(offer_id, "offer")
        offer = await self.find(offer_id)
        if offer is None:
            raise SoukError(Code.NOT_FOUND, f"no team-buy offer {offer_id}")
        if self.shared:
            await self.sync(offer)
        return offer

    async def find(self, offer_id: str) -> TeamBuyOffer | None:
        """An offer this node knows, or in a cluster one another node created (adopted)."""
        offer = self.offers.get(offer_id)
        if offer is None and self.absent.may_ask("offer", offer_id):
            stored = self.absent.note("offer", offer_id, await self.store.offer(offer_id))
            offer = self.offers.get(offer_id)
            if offer is None and stored is not None:
                await self.products.find(stored.product)
                offer = self.offers.get(offer_id)  # and again: that was another await
            if offer is None and stored is not None:
                self.register(stored)
                self.arm(stored)
                offer = stored
        return offer

    async def sync(self, offer: TeamBuyOffer) -> None:
        """Cluster: the offer's open teams and stock as stored; teams this node still thinks
        open but the store does not are read back one by one (confirmed or failed
        elsewhere: their members are free again)."""
        stored = await self.store.offer(offer.id)
        if stored is None:
            return
        pending = set(self.pending)
        gone = offer.sync(list(stored.teams.values()), stored.stock_left, pending)
        for team in gone:
            settled = await self.store.team(team.id)
            if settled is not None:
                offer.settle(settled, pending)
        self.arm(offer)

    async def locate(self, offer_id: Any) -> str | None:
        """`room`, adopting an offer another node created (None: unknown anywhere)."""
        if not isinstance(offer_id, str) or not fields.ID_RE.fullmatch(offer_id):
            return None
        offer = await self.find(offer_id)
        return None if offer is None else offer.room

    def room(self, offer_id: Any) -> str | None:
        """The room a team-buy offer belongs to (None: unknown)."""
        offer = self.offers.get(offer_id) if isinstance(offer_id, str) else None
        return None if offer is None else offer.room

    def register(self, offer: TeamBuyOffer) -> None:
        self.offers[offer.id] = offer
        self.offers_of.setdefault(offer.room, []).append(offer.id)

    # -- teams -----------------------------------------------------------------------------
    async def open(self, user_id: str, name: str, offer_id: Any, key: Any) -> dict[str, Any]:
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

    async def join(
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
        self.pending[joined.order.id] = task
        task.add_done_callback(lambda _: self.pending.pop(joined.order.id, None))
        self.plumbing.tasks.add(task)  # `stop` waits for it like for every other write
        task.add_done_callback(self.plumbing.tasks.discard)
        await wait_write(task)
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
                self.plumbing.order(member)
            self._publish_team(team, final=True)
        else:
            self.plumbing.order(order)
            self._publish_team(team, final=False)
        if order.user == team.leader or team.status is TeamStatus.CONFIRMED:
            self._publish_offer(offer, droppable=True)  # a team appeared or left the list
        self.arm(offer)
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
            self.plumbing.spawn(self._settle(offer, joined.team.id))
            raise
        stored = await self._read_team(joined.team.id)
        team = joined.team if stored is None else offer.settle(stored, set(self.pending))
        offer.committed(Joined(team, order, new=True, filled=bool(confirmed)))
        if confirmed:
            for member in team.members:
                self.plumbing.order(member)
            self._publish_team(team, final=True)
        elif team.status is TeamStatus.OPEN:  # else the write that settled it told everyone
            self.plumbing.order(order)
            self._publish_team(team, final=False)
        if order.user == team.leader or confirmed:
            self._publish_offer(offer, droppable=True)
        self.arm(offer)
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
        team = offer.settle(stored, set(self.pending))
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
            offer.settle(stored, set(self.pending))

    async def _replayed(self, joined: Joined) -> dict[str, Any]:
        pending = self.pending.get(joined.order.id)
        if pending is not None:
            await wait_write(pending)
        current = joined.team.member(joined.order.user) or joined.order
        return {"team": joined.team.to_dict(), "order": current.to_dict()}

    def _unjoin(self, offer: TeamBuyOffer, joined: Joined) -> None:
        offer.undo(joined)
        if joined.team.id in offer.teams:
            self._publish_team(joined.team, final=False)

    # -- deadlines -------------------------------------------------------------------------
    def _expire(self, offer: TeamBuyOffer, now: int) -> None:
        """Fail the teams whose deadline passed: holds released, members and room told."""
        failed = offer.expire(now)
        if self.shared:  # the store says which node failed it: that one tells everyone
            for team in failed:
                self.plumbing.spawn(self._fail_shared(offer, team))
            self.arm(offer)
            return
        for team in failed:
            self.plumbing.spawn(self._fail_team(team))
        self._tell_failed(offer, failed)
        self.arm(offer)

    async def close_room(self, room: str) -> int:
        """The room's live ended: its open teams fail now, durably (holds released, members
        and room told). Returns how many failed."""
        count = 0
        for oid in list(self.offers_of.get(room, [])):
            offer = self.offers.get(oid)
            if offer is None:
                continue
            failed = offer.fail_open()
            count += len(failed)
            if self.shared:
                await asyncio.gather(*(self._fail_shared(offer, team) for team in failed))
            else:
                await asyncio.gather(*(self._fail_team(team) for team in failed))
                self._tell_failed(offer, failed)
            self.arm(offer)
        return count

    def _tell_failed(self, offer: TeamBuyOffer, failed: list[Team]) -> None:
        """Failed teams: each member's order, the team and the offer's stock to the room."""
        for team in failed:
            for member in team.members:
                self.plumbing.order(member)
            self._publish_team(team, final=True)
        if failed:
            self._publish_offer(offer, droppable=True)

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
        settled = team if stored is None else offer.settle(stored, set(self.pending))
        if not won:
            return
        for member in settled.members:
            self.plumbing.order(member)
        self._publish_team(settled, final=True)
        self._publish_offer(offer, droppable=True)

    async def _fail_team(self, team: Team) -> None:
        try:
            await self.store.fail_team(team.id)
        except Exception:  # recovery fails it on the next start
            log.exception("failing team %s failed", team.id)

    def arm(self, offer: TeamBuyOffer) -> None:
        deadline = offer.next_deadline()
        if deadline is None:
            self.plumbing.disarm(f"offer:{offer.id}")
            return
        self.plumbing.call_at(
            f"offer:{offer.id}", deadline, lambda: self._expire(offer, self.clock_ms())
        )

    def mine(self, stored: list[Team]) -> list[dict[str, Any]]:
        """Teams as a reloaded page shows them: the product's title and the time left."""
        now = self.clock_ms()
        out = []
        for team in stored:
            offer = self.offers.get(team.offer)
            current = offer.teams.get(team.id, team) if offer is not None else team
            view = current.to_dict()
            product_id = offer.product if offer is not None else (
                current.members[0].product if current.members else "")
            product = self.products.catalog.get(product_id)
            view["title"] = product.title if product is not None else ""
            view["remaining_ms"] = (max(0, current.expires_at - now)
                                    if current.status is TeamStatus.OPEN else 0)
            out.append(view)
        return out

    # -- views and events ------------------------------------------------------------------
    def _publish_team(self, team: Team, *, final: bool) -> None:
        """Team progress is coalesced per team; a final status goes out at once."""
        if final or team.status is not TeamStatus.OPEN:
            self.plumbing.disarm(f"team:{team.id}")
            self._team_throttle.pop(team.id, None)
            self.plumbing.emit(room_channel(team.room), "team", team.to_dict())
            return
        throttle = self._team_throttle.setdefault(team.id, PushThrottle())
        now = self.clock_ms()
        due = throttle.note(now)
        if due is None:
            return
        if due <= now:
            throttle.pushed(now)
            self.plumbing.emit(room_channel(team.room), "team", team.to_dict(), droppable=True)
        else:
            self.plumbing.call_at(f"team:{team.id}", due, lambda: self._flush_team(team))

    def _flush_team(self, team: Team) -> None:
        throttle = self._team_throttle.get(team.id)
        if throttle is None or team.status is not TeamStatus.OPEN:
            return
        throttle.pushed(self.clock_ms())
        self.plumbing.emit(room_channel(team.room), "team", team.to_dict(), droppable=True)

    def view(self, offer: TeamBuyOffer) -> dict[str, Any]:
        view = offer.to_dict()
        product = self.products.catalog.get(offer.product)
        if product is not None:
            view["title"] = product.title
            view["image"] = product.image
            view["list_price"] = product.price
        joinable = [t for t in offer.teams.values() if t.status is TeamStatus.OPEN and t.durable]
        joinable.sort(key=lambda t: (t.missing, t.opened_at))
        view["teams"] = [t.to_dict() for t in joinable[:MAX_VIEW_TEAMS]]
        return view

    def push(self, offer: TeamBuyOffer) -> None:
        """Tell the room the offer again (its product card changed)."""
        self._publish_offer(offer)

    def _publish_offer(self, offer: TeamBuyOffer, *, droppable: bool = False) -> None:
        """Creation is never droppable; later updates (a team opened or filled) are progress."""
        view = self.view(offer)
        self.plumbing.emit(room_channel(offer.room), "teambuy", view, droppable=droppable)
        self.plumbing.tell(TeamBuyOpened(offer.room, offer.id, view))
