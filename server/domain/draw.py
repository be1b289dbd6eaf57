"""Lucky draws (福袋/抽奖): what a draw is, who may enter it, and who wins, without I/O.

Why a draw is checkable by anyone: at creation the server picks a random seed and publishes
only `commitment = sha256(seed)`. When the draw closes, the list of entrants is fixed (each
as the hex sha256 of their user id, so a viewer can find themselves without learning who the
others are) and published with its `digest`, then the seed is revealed. The winners are a
deterministic function of the seed and the sorted entrant hashes (`pick`), so anybody holding
the seed, the commitment and the list (`souk draw-verify`) recomputes them and sees that the
streamer did not choose. What this does not prove, and how a public randomness beacon closes
that gap, is said in docs/draws.md.

The winner function, exactly (the reference for any outside verifier):

    key    = seed                              (no beacon)
           = sha256(seed || beacon_randomness) (a beacon round was fetched after the close)
    score(h) = HMAC-SHA256(key, h as ASCII)    for each entrant hash h (64 lowercase hex)
    winners = the `k` entrants with the lowest (score, h), in that order

where `seed` and `beacon_randomness` are the raw bytes of their hex strings.

Also here: the entry rules (one entry per user, staff and banned users never enter, the
condition), the phases (`open` -> `drawing` -> `done`, or `cancelled`), and `Stays`, the
server's own measure of how long a viewer has been in a room (reconnects within
`RECONNECT_GRACE_MS` are continuous).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain import fields
from server.domain.coupons import CouponSpec, coupon_spec
from server.domain.errors import SoukError

MIN_DURATION_S: Final = 5
MAX_DURATION_S: Final = 24 * 3600
MAX_WINNERS: Final = 1000
MAX_KEYWORD: Final = 20
MAX_WATCH_S: Final = 4 * 3600
SEED_BYTES: Final = 32
RECONNECT_GRACE_MS: Final = 30_000  # a viewer back within this long never left
HEX64: Final = re.compile(r"[0-9a-f]{64}")


class Phase(StrEnum):
    OPEN = "open"  # taking entries until ends_at
    DRAWING = "drawing"  # closed: the entrant list is fixed, the winners are being drawn
    DONE = "done"  # winners drawn, seed revealed, prizes granted
    CANCELLED = "cancelled"  # stopped by the streamer before the close; nobody wins


FINAL: Final = frozenset({Phase.DONE, Phase.CANCELLED})


@dataclass(frozen=True)
class Condition:
    """What a viewer must do to enter; every part given must hold (none: anyone present)."""

    keyword: str | None = None  # a chat message containing it enters the sender
    watch_s: int | None = None  # seconds in the room, measured by the server
    group: str | None = None  # a community group the viewer is a member of

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.keyword is not None:
            out["keyword"] = self.keyword
        if self.watch_s is not None:
            out["watch_s"] = self.watch_s
        if self.group is not None:
            out["group"] = self.group
        return out


def condition_from(raw: Any, scope: str) -> Condition:
    f = fields.mapping({} if raw is None else raw, "condition")
    unknown = set(f) - {"keyword", "watch_s", "group"}
    if unknown:
        raise fields.invalid("condition", f"unknown part {sorted(unknown)[0]!r}"
                             " (keyword, watch_s, group)")
    keyword: str | None = None
    if f.get("keyword") is not None:
        keyword = fields.text(f, "keyword", 1, MAX_KEYWORD).strip()
        if not keyword:
            raise fields.invalid("keyword", "must not be blank")
    watch_s = fields.optional_integer(f, "watch_s", 1, MAX_WATCH_S)
    if watch_s is not None and scope != "room":
        raise fields.invalid("watch_s", "time watched is measured in a live room only")
    group = None if f.get("group") is None else fields.ident(f, "group")
    return Condition(keyword, watch_s, group)


@dataclass(frozen=True)
class Prize:
    """A product (each winner gets a prize order of one unit at price 0) or a coupon."""

    product: str | None = None
    coupon: CouponSpec | None = None
    title: str = ""  # the product's title, or the coupon's, as viewers see the prize
    currency: str = ""  # the product's (its prize orders are in it, at price 0)

    def to_dict(self) -> dict[str, Any]:
        if self.product is not None:
            return {"product": self.product, "title": self.title, "currency": self.currency}
        assert self.coupon is not None
        c = self.coupon
        return {"coupon": {"kind": c.kind, "value": c.value, "min_spend": c.min_spend,
                           "expires_at": c.expires_at, "title": c.title}, "title": self.title}


def prize_from(raw: Any, now_ms: int) -> Prize:
    """`{product}` or `{coupon: {kind, value, ...}}` (the coupon fields of `coupon_issue`)."""
    f = fields.mapping(raw, "prize")
    if ("product" in f) == ("coupon" in f):
        raise fields.invalid("prize", "give either a product or a coupon")
    if "product" in f:
        return Prize(product=fields.ident(f, "product"))
    spec = coupon_spec(f["coupon"], now_ms)
    return Prize(coupon=spec, title=spec.title)


def prize_stored(data: Mapping[str, Any]) -> Prize:
    """A prize as `Prize.to_dict` wrote it."""
    if data.get("product") is not None:
        return Prize(product=str(data["product"]), title=str(data.get("title", "")),
                     currency=str(data.get("currency", "")))
    c = data["coupon"]
    return Prize(coupon=CouponSpec(c["kind"], c["value"], c["min_spend"], c["expires_at"],
                                   c["title"]), title=str(data.get("title", "")))


@dataclass(frozen=True)
class DrawSpec:
    title: str
    prize: Prize
    winners: int
    duration_s: int
    condition: Condition


def draw_spec(raw: Any, scope: str, now_ms: int) -> DrawSpec:
    """Validate `draw_create`'s fields (the room or group is the op's)."""
    f = fields.mapping(raw)
    title = fields.text(f, "title", 1, fields.MAX_TITLE)
    prize = prize_from(f.get("prize"), now_ms)
    winners = fields.integer(f, "winners", 1, MAX_WINNERS)
    duration_s = fields.integer(f, "duration_s", MIN_DURATION_S, MAX_DURATION_S)
    condition = condition_from(f.get("condition"), scope)
    return DrawSpec(title, prize, winners, duration_s, condition)


# ---- the verifiable part ----------------------------------------------------------------
def entrant_hash(user: str) -> str:
    """How an entrant appears in the published list: hex sha256 of the UTF-8 user id."""
    return hashlib.sha256(user.encode()).hexdigest()


def commitment_of(seed_hex: str) -> str:
    """Hex sha256 of the seed's bytes: published at creation, before anyone enters."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def digest_of(sorted_hashes: Iterable[str]) -> str:
    """One value that names the closed entrant list: sha256 of the sorted hashes, one per
    line (each followed by a newline)."""
    h = hashlib.sha256()
    for e in sorted_hashes:
        h.update(e.encode("ascii") + b"\n")
    return h.hexdigest()


def draw_key(seed_hex: str, beacon_hex: str | None) -> bytes:
    """The HMAC key: the seed, or sha256(seed || beacon randomness) when a beacon was mixed in."""
    seed = bytes.fromhex(seed_hex)
    if beacon_hex is None:
        return seed
    return hashlib.sha256(seed + bytes.fromhex(beacon_hex)).digest()


def pick(seed_hex: str, entrant_hashes: Iterable[str], k: int,
         beacon_hex: str | None = None) -> list[str]:
    """The winners: the `k` entrant hashes with the lowest HMAC-SHA256(key, hash), ties (which
    sha256 makes vanishingly unlikely) broken by the hash itself. Order of the input does not
    matter; duplicates count once."""
    key = draw_key(seed_hex, beacon_hex)
    scored = sorted((hmac.new(key, h.encode("ascii"), hashlib.sha256).digest(), h)
                    for h in set(entrant_hashes))
    return [h for _, h in scored[:k]]


@dataclass(frozen=True)
class Verification:
    commitment_ok: bool
    digest: str
    winners: list[str]  # entrant hashes, best first
    matches: bool | None  # the published winners, when given, are these (None: not given)

    @property
    def ok(self) -> bool:
        return self.commitment_ok and self.matches is not False


def verify(seed_hex: str, commitment_hex: str, entrant_hashes: Iterable[str], k: int,
           beacon_hex: str | None = None, published: Iterable[str] | None = None,
           published_digest: str | None = None) -> Verification:
    """Recompute a draw from what it published (the reference for `souk draw-verify`)."""
    seed_hex, commitment_hex = seed_hex.strip().lower(), commitment_hex.strip().lower()
    hashes = sorted({h.strip().lower() for h in entrant_hashes if h.strip()})
    bad = [h for h in hashes if not HEX64.fullmatch(h)]
    if bad:
        raise SoukError(Code.INVALID, f"not an entrant hash (64 hex digits): {bad[0][:80]!r}")
    try:
        commitment_ok = commitment_of(seed_hex) == commitment_hex
    except ValueError:
        raise SoukError(Code.INVALID, "the seed must be hex") from None
    digest = digest_of(hashes)
    winners = pick(seed_hex, hashes, k, beacon_hex)
    matches: bool | None = None
    if published is not None:
        matches = list(published) == winners
    if published_digest is not None and published_digest != digest:
        matches = False
    return Verification(commitment_ok, digest, winners, matches)


def masked(name: str) -> str:
    """A winner's name as the room sees it: the first character and a star (`小*`), as the
    pages mask other shoppers' names."""
    name = name.strip()
    return name[0] + "*" if name else "*"


# ---- one draw ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Winner:
    user: str
    name: str  # as given at entry (the room sees `masked(name)`)
    hash: str


@dataclass
class Draw:
    """One draw as this node holds it; the record (server/store/draws.py) is the truth."""

    id: str
    shop: str
    scope: str  # "room" or "group"
    target: str
    title: str
    prize: Prize
    winners: int
    condition: Condition
    created_by: str
    created_at: int
    ends_at: int
    seed: str  # hex; revealed only when the draw is done
    commitment: str
    phase: Phase = Phase.OPEN
    entrants: int = 0  # the count as last known (the record's, in a cluster)
    closed_at: int | None = None
    digest: str | None = None
    beacon: dict[str, Any] | None = None
    result: list[Winner] = field(default_factory=list)
    viewers_at_close: int = 0
    entered: set[str] = field(default_factory=set)  # users this node knows have entered

    @classmethod
    def create(cls, draw_id: str, shop: str, scope: str, target: str, spec: DrawSpec,
               by: str, seed_hex: str, now_ms: int) -> Draw:
        if len(bytes.fromhex(seed_hex)) != SEED_BYTES:
            raise ValueError("a draw's seed is 32 random bytes")
        return cls(draw_id, shop, scope, target, spec.title, spec.prize, spec.winners,
                   spec.condition, by, now_ms, now_ms + spec.duration_s * 1000, seed_hex,
                   commitment_of(seed_hex))

    @property
    def channel(self) -> str:
        return f"{self.scope}:{self.target}"

    def is_open(self, now_ms: int) -> bool:
        return self.phase is Phase.OPEN and now_ms < self.ends_at

    def due(self, now_ms: int) -> bool:
        """Time to close: open and past its end."""
        return self.phase is Phase.OPEN and now_ms >= self.ends_at

    def check_entry(self, user: str, now_ms: int, *, customer: bool, banned: bool,
                    watched_ms: int | None, member: bool | None, by_chat: bool = False) -> bool:
        """May `user` enter now? Returns False when they already have (entering twice is not
        an error: one entry per user, whatever the connections). Refusals are errors.
        `watched_ms`: the server's measure of their continuous time in the room (None when
        the condition needs none); `member`: of `member_group()` (None when there is none)."""
        if not self.is_open(now_ms):
            raise SoukError(Code.ENDED, "this draw is closed", draw=self.id)
        if not customer:
            raise SoukError(Code.FORBIDDEN, "the shop's staff do not enter its draws")
        if banned:
            raise SoukError(Code.BANNED, "you are banned here")
        if user in self.entered:
            return False
        c = self.condition
        if c.keyword is not None and not by_chat:
            raise SoukError(Code.FORBIDDEN, f"send {c.keyword!r} in the chat to enter",
                            keyword=c.keyword)
        if c.watch_s is not None:
            need = c.watch_s * 1000 - (watched_ms or 0)
            if need > 0:
                raise SoukError(Code.FORBIDDEN, f"stay in the room {-(-need // 1000)} s more to enter",
                                wait_s=-(-need // 1000))
        group = self.member_group()
        if group is not None and not member:
            raise SoukError(Code.FORBIDDEN, f"join group {group} to enter", group=group)
        return True

    def member_group(self) -> str | None:
        """The group an entrant must be a member of: the condition's, or a group draw's own."""
        if self.condition.group is not None:
            return self.condition.group
        return self.target if self.scope == "group" else None

    def chat_enters(self, text: str) -> bool:
        """Does this chat message carry the draw's keyword (case-insensitive)?"""
        k = self.condition.keyword
        return k is not None and self.phase is Phase.OPEN and k.casefold() in text.casefold()

    def close(self, now_ms: int, entrant_hashes: Iterable[str], viewers: int) -> str:
        """Fix the entrant list (open -> drawing); returns its digest."""
        if self.phase is not Phase.OPEN:
            raise SoukError(Code.CONFLICT, f"this draw is {self.phase}")
        hashes = sorted(set(entrant_hashes))
        self.phase = Phase.DRAWING
        self.closed_at = now_ms
        self.entrants = len(hashes)
        self.digest = digest_of(hashes)
        self.viewers_at_close = viewers
        return self.digest

    def draw(self, entrants: Mapping[str, str], beacon_hex: str | None) -> list[Winner]:
        """The winners among `entrants` (user -> name as entered); the draw must be closed.
        Deterministic: the same entrants, seed and beacon give the same winners."""
        if self.phase is not Phase.DRAWING:
            raise SoukError(Code.CONFLICT, f"this draw is {self.phase}")
        by_hash = {entrant_hash(u): u for u in entrants}
        won = pick(self.seed, by_hash, self.winners, beacon_hex)
        return [Winner(by_hash[h], entrants[by_hash[h]], h) for h in won]

    def settle(self, winners: list[Winner], beacon: dict[str, Any] | None) -> None:
        """drawing -> done: the result is recorded (the seed may now be shown)."""
        if self.phase is not Phase.DRAWING:
            raise SoukError(Code.CONFLICT, f"this draw is {self.phase}")
        self.phase = Phase.DONE
        self.result = list(winners)
        self.beacon = beacon

    def cancel(self) -> None:
        if self.phase is not Phase.OPEN:
            raise SoukError(Code.CONFLICT, f"this draw is {self.phase}; only an open draw is cancelled")
        self.phase = Phase.CANCELLED

    def view(self) -> dict[str, Any]:
        """The `draw` event and list item: the seed only once done."""
        out: dict[str, Any] = {
            "id": self.id, "title": self.title, "prize": self.prize.to_dict(),
            "winners_count": self.winners, "condition": self.condition.to_dict(),
            "phase": str(self.phase), "entrants": self.entrants, "ends_at": self.ends_at,
            "commitment": self.commitment, self.scope: self.target,
        }
        if self.digest is not None:
            out["digest"] = self.digest
            out["closed_at"] = self.closed_at
        if self.phase is Phase.DONE:
            out["seed"] = self.seed
            out["winners"] = [{"user": w.user, "name": masked(w.name)} for w in self.result]
            out["beacon"] = self.beacon
        return out


# ---- time in a room, as the server sees it ---------------------------------------------
class Stays:
    """Since when each viewer has been in each room without a break longer than the grace.

    A viewer is in a room while at least one of their connections has joined it. When the
    last one leaves, the stay is kept for `grace_ms`: a join before that continues it (a
    phone that lost its network for a few seconds). The client never claims its own time.
    """

    def __init__(self, grace_ms: int = RECONNECT_GRACE_MS) -> None:
        self.grace_ms = grace_ms
        self._present: dict[tuple[str, str], list[int]] = {}  # -> [since, connections]
        self._gone: dict[tuple[str, str], tuple[int, int]] = {}  # -> (since, left_at)

    def joined(self, room: str, user: str, now_ms: int) -> None:
        key = (room, user)
        here = self._present.get(key)
        if here is not None:
            here[1] += 1
            return
        since = now_ms
        gone = self._gone.pop(key, None)
        if gone is not None and now_ms - gone[1] <= self.grace_ms:
            since = gone[0]
        self._present[key] = [since, 1]

    def left(self, room: str, user: str, now_ms: int) -> None:
        key = (room, user)
        here = self._present.get(key)
        if here is None:
            return
        here[1] -= 1
        if here[1] <= 0:
            del self._present[key]
            self._gone[key] = (here[0], now_ms)

    def watched_ms(self, room: str, user: str, now_ms: int) -> int:
        """Continuous time in the room up to now (0 when not in it)."""
        here = self._present.get((room, user))
        return 0 if here is None else max(0, now_ms - here[0])

    def present(self, room: str, user: str) -> bool:
        return (room, user) in self._present

    def sweep(self, now_ms: int) -> int:
        """Forget stays whose grace has passed; returns how many."""
        old = [k for k, (_, left) in self._gone.items() if now_ms - left > self.grace_ms]
        for k in old:
            del self._gone[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._present) + len(self._gone)
