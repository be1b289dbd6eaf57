"""Team buy (拼团): an offer at a team price; buyers open teams of N and others join.

A team that reaches its size before its deadline confirms every member's order; one whose
deadline passes fails and every hold is released. A buyer is in at most one open team per
offer. `team_join` without a team id matches the buyer into the open team closest to full
(Pinduoduo-style), oldest first on ties.

Stock (optional): opening a team holds `size` units of the offer's stock, so a team that
opens can always fill; a failed team gives them back. Pure rules: time is `now_ms`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain import fields
from server.domain import order as order_status
from server.domain.catalog import Product
from server.domain.errors import SoukError
from server.domain.order import Order
from server.domain.purchases import mask_name

MIN_SIZE: Final = 2
MAX_SIZE: Final = 50
MAX_WINDOW_S: Final = 7 * 86_400


class TeamStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(frozen=True)
class OfferSpec:
    """Validated `teambuy_create` fields."""

    product: str
    price: int
    size: int
    window_s: int
    stock: int | None


def offer_spec(raw: Any) -> OfferSpec:
    """Validate `teambuy_create`: product, price, size (2..50), window_s (1..7 days), stock?."""
    f: Mapping[str, Any] = fields.mapping(raw)
    product = fields.ident(f, "product")
    price = fields.integer(f, "price", 1, fields.MAX_PRICE)
    size = fields.integer(f, "size", MIN_SIZE, MAX_SIZE)
    window_s = fields.integer(f, "window_s", 1, MAX_WINDOW_S)
    stock = fields.optional_integer(f, "stock", size, fields.MAX_STOCK)
    return OfferSpec(product, price, size, window_s, stock)


@dataclass
class Team:
    """A team: its members' orders (pending until full), a deadline and a status."""

    id: str
    offer: str
    room: str
    leader: str
    size: int
    opened_at: int
    expires_at: int
    status: TeamStatus = TeamStatus.OPEN
    members: list[Order] = field(default_factory=list)
    durable: bool = False  # joinable only once its opening is committed

    @property
    def missing(self) -> int:
        return self.size - len(self.members)

    def member(self, user: str) -> Order | None:
        for m in self.members:
            if m.user == user:
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "offer": self.offer,
            "room": self.room,
            "leader": self.leader,
            # the whole room sees a team card: names masked as in the purchase ticker
            "members": [{"user": m.user, "name": mask_name(m.name)} for m in self.members],
            "count": len(self.members),
            "size": self.size,
            "opened_at": self.opened_at,
            "expires_at": self.expires_at,
            "status": str(self.status),
        }


@dataclass(frozen=True)
class Joined:
    """What `open` / `join` did: the team, the buyer's order, and whether the call filled the
    team (then `team.members` are the confirmed orders to push). `new` is False for a replay
    of a known idempotency key."""

    team: Team
    order: Order
    new: bool
    filled: bool


class TeamBuyOffer:
    """One offer and its teams."""

    def __init__(
        self,
        *,
        id: str,
        room: str,
        product: str,
        price: int,
        currency: str,
        size: int,
        window_s: int,
        created_at: int,
        stock: int | None = None,
        stock_left: int | None = None,
    ) -> None:
        self.id = id
        self.room = room
        self.product = product
        self.price = price
        self.currency = currency
        self.size = size
        self.window_s = window_s
        self.created_at = created_at
        self.stock = stock
        self.stock_left = stock if stock_left is None else stock_left
        self.teams: dict[str, Team] = {}
        self._open_of: dict[str, str] = {}  # user -> their open team's id
        self._by_key: dict[tuple[str, str], tuple[Team, Order]] = {}

    @classmethod
    def create(
        cls, offer_id: str, room: str, spec: OfferSpec, product: Product, now_ms: int
    ) -> TeamBuyOffer:
        """A new offer; with a stock, the caller reserves it from the product first."""
        return cls(
            id=offer_id,
            room=room,
            product=product.id,
            price=spec.price,
            currency=product.currency,
            size=spec.size,
            window_s=spec.window_s,
            created_at=now_ms,
            stock=spec.stock,
        )

    # -- joining ---------------------------------------------------------------------------
    def _replay(self, user: str, key: str) -> Joined | None:
        known = self._by_key.get((user, key))
        if known is None:
            return None
        team, order = known
        current = team.member(user) or order
        return Joined(team, current, new=False, filled=False)

    def _check_free(self, user: str) -> None:
        if user in self._open_of:
            raise SoukError(
                Code.ALREADY_IN_TEAM,
                "you are already in an open team of this offer",
                team=self._open_of[user],
            )

    def _order(
        self, team: Team, user: str, name: str, key: str, order_id: str, now_ms: int
    ) -> Order:
        return Order(
            id=order_id,
            user=user,
            room=self.room,
            product=self.product,
            qty=1,
            price=self.price,
            currency=self.currency,
            key=key,
            created_at=now_ms,
            status=order_status.PENDING,
            offer=self.id,
            team=team.id,
            name=name,
        )

    def open(
        self, user: str, name: str, key: Any, team_id: str, order_id: str, now_ms: int
    ) -> Joined:
        """The buyer opens a team as its leader (holding `size` units when the offer has stock)."""
        key = fields.key_value(key)
        replay = self._replay(user, key)
        if replay is not None:
            return replay
        self._check_free(user)
        if self.stock_left is not None:
            if self.stock_left < self.size:
                raise SoukError(Code.SOLD_OUT, "no stock left for another team")
            self.stock_left -= self.size
        team = Team(
            id=team_id,
            offer=self.id,
            room=self.room,
            leader=user,
            size=self.size,
            opened_at=now_ms,
            expires_at=now_ms + self.window_s * 1000,
        )
        order = self._order(team, user, name, key, order_id, now_ms)
        team.members.append(order)
        self.teams[team.id] = team
        self._open_of[user] = team.id
        self._by_key[(user, key)] = (team, order)
        return Joined(team, order, new=True, filled=False)

    def match(self, exclude: str | None = None) -> Team | None:
        """The joinable team closest to full (fewest missing), oldest first on ties."""
        best: Team | None = None
        for team in self.teams.values():
            if team.status is not TeamStatus.OPEN or not team.durable or team.id == exclude:
                continue
            if best is None or (team.missing, team.opened_at) < (best.missing, best.opened_at):
                best = team
        return best

    def join(
        self, user: str, name: str, key: Any, team_id: Any, order_id: str, now_ms: int
    ) -> Joined:
        """Join team `team_id`, or (None) be matched into the open team closest to full."""
        key = fields.key_value(key)
        replay = self._replay(user, key)
        if replay is not None:
            return replay
        self._check_free(user)
        self.expire(now_ms)
        if team_id is None:
            team = self.match()
            if team is None:
                raise SoukError(Code.NOT_FOUND, "no open team to join; open one")
        else:
            team_id = fields.ident_value(team_id, "team")
            found = self.teams.get(team_id)
            if found is None or not found.durable:
                raise SoukError(Code.NOT_FOUND, f"no team {team_id} in this offer")
            team = found
            if team.status is TeamStatus.CONFIRMED:
                raise SoukError(Code.TEAM_FULL, "this team is full")
            if team.status is TeamStatus.FAILED:
                raise SoukError(Code.ENDED, "this team's time is up")
        order = self._order(team, user, name, key, order_id, now_ms)
        team.members.append(order)
        self._by_key[(user, key)] = (team, order)
        self._open_of[user] = team.id
        filled = team.missing == 0
        if filled:
            self._confirm(team)
            order = team.members[-1]
        return Joined(team, order, new=True, filled=filled)

    def _confirm(self, team: Team) -> None:
        """Members stay bound to the team (`already_in_team`) until `committed`: if the write
        that fills it fails, `undo` re-opens it and none of them may be in another team."""
        team.status = TeamStatus.CONFIRMED
        team.members = [dataclasses.replace(m, status=order_status.CONFIRMED) for m in team.members]
        for m in team.members:
            self._by_key[(m.user, m.key)] = (team, m)

    def committed(self, joined: Joined) -> None:
        """The `open`/`join` is durable: an opened team becomes joinable, and the members of a
        team it filled are free to open or join other teams. Writes complete in the order they
        were made (one writer queue), so an earlier join that failed was undone before this."""
        team = joined.team
        team.durable = True
        if joined.filled and team.status is TeamStatus.CONFIRMED:
            for m in team.members:
                if self._open_of.get(m.user) == team.id:
                    del self._open_of[m.user]

    def undo(self, joined: Joined) -> None:
        """Take back an `open`/`join` whose durable write failed."""
        team, order = joined.team, joined.order
        team.members = [m for m in team.members if m.user != order.user]
        if self._by_key.get((order.user, order.key), (None,))[0] is team:
            del self._by_key[(order.user, order.key)]
        if self._open_of.get(order.user) == team.id:
            del self._open_of[order.user]
        if team.status is TeamStatus.CONFIRMED:
            # filled by this join, or by a later one whose write is still queued behind this
            # failed one (the ledger confirms by count, so it will not confirm it either)
            team.status = TeamStatus.OPEN
            team.members = [
                dataclasses.replace(m, status=order_status.PENDING) for m in team.members
            ]
            for m in team.members:  # still bound to this team: confirmation waits for commit
                self._by_key[(m.user, m.key)] = (team, m)
                self._open_of.setdefault(m.user, team.id)
        if not team.members:  # an opening that failed: the team never existed
            del self.teams[team.id]
            if self.stock_left is not None and team.status is TeamStatus.OPEN:
                self.stock_left += self.size

    # -- time ------------------------------------------------------------------------------
    def expire(self, now_ms: int) -> list[Team]:
        """Fail every open team whose deadline passed; release holds. Returns the failed teams."""
        failed: list[Team] = []
        for team in self.teams.values():
            if team.status is TeamStatus.OPEN and now_ms >= team.expires_at:
                self._fail(team)
                failed.append(team)
        return failed

    def fail_open(self) -> list[Team]:
        """The live ended: every open team fails now and its holds are released."""
        failed = [t for t in self.teams.values() if t.status is TeamStatus.OPEN]
        for team in failed:
            self._fail(team)
        return failed

    def _fail(self, team: Team) -> None:
        team.status = TeamStatus.FAILED
        team.members = [dataclasses.replace(m, status=order_status.FAILED) for m in team.members]
        for m in team.members:
            if self._open_of.get(m.user) == team.id:
                del self._open_of[m.user]
            self._by_key[(m.user, m.key)] = (team, m)
        if self.stock_left is not None:
            self.stock_left += self.size

    def next_deadline(self) -> int | None:
        open_deadlines = [t.expires_at for t in self.teams.values() if t.status is TeamStatus.OPEN]
        return min(open_deadlines) if open_deadlines else None

    def restore(self, team: Team) -> None:
        """Recovery: re-learn a durable team with its members (stock_left loaded with the offer)."""
        team.durable = True
        self.teams[team.id] = team
        for m in team.members:
            self._by_key[(m.user, m.key)] = (team, m)
            if team.status is TeamStatus.OPEN:
                self._open_of[m.user] = team.id

    # -- cluster: follow the shared store --------------------------------------------------
    def settle(self, stored: Team, pending: Collection[str] = ()) -> Team:
        """Cluster: make this node's team follow the store's (`stored`, with its durable
        members). Other nodes' joins appear; a team confirmed or failed elsewhere takes that
        status and frees its members. This node's joins whose write is still in flight
        (order ids in `pending`) stay while the team is open. Returns this node's team."""
        team = self.teams.get(stored.id)
        if team is None:
            team = dataclasses.replace(stored, members=[])
            self.teams[team.id] = team
        ids = {m.id for m in stored.members}
        local = [m for m in team.members if m.id in pending and m.id not in ids]
        team.status, team.durable = stored.status, True
        team.members = list(stored.members) + (local if stored.status is TeamStatus.OPEN else [])
        for m in team.members:
            self._by_key[(m.user, m.key)] = (team, m)
            if team.status is TeamStatus.OPEN:
                self._open_of[m.user] = team.id
            elif self._open_of.get(m.user) == team.id:
                del self._open_of[m.user]
        return team

    def sync(self, open_teams: list[Team], stock_left: int | None,
             pending: Collection[str] = ()) -> list[Team]:
        """Cluster: `open_teams` are the offer's open teams as stored and `stock_left` its
        stored stock. Returns this node's teams that are open here but not in the store any
        more (settled elsewhere: the caller reads them back and `settle`s them)."""
        listed = {t.id for t in open_teams}
        for t in open_teams:
            self.settle(t, pending)
        self.stock_left = stock_left
        return [t for t in self.teams.values() if t.status is TeamStatus.OPEN
                and t.durable and t.id not in listed
                and not any(m.id in pending for m in t.members)]

    def forget(self, joined: Joined) -> None:
        """Cluster: take back an `open`/`join` the store refused, without guessing the
        team's status (the caller settles it from the store)."""
        team, order = joined.team, joined.order
        team.members = [m for m in team.members if m.id != order.id]
        if self._by_key.get((order.user, order.key), (None,))[0] is team:
            del self._by_key[(order.user, order.key)]
        if self._open_of.get(order.user) == team.id:
            del self._open_of[order.user]
        if not team.members and not team.durable:  # an opening that failed
            del self.teams[team.id]
            if self.stock_left is not None:
                self.stock_left += self.size

    def open_team_of(self, user: str) -> str | None:
        return self._open_of.get(user)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "product": self.product,
            "price": self.price,
            "currency": self.currency,
            "size": self.size,
            "window_s": self.window_s,
            "stock": self.stock,
            "stock_left": self.stock_left,
            "open_teams": sum(1 for t in self.teams.values() if t.status is TeamStatus.OPEN),
            "created_at": self.created_at,
        }
