"""The lucky draw's rules, without I/O: the winner function (pinned, and recomputed by an
independent reading of docs/draws.md), entry rules, phases, and the server's measure of time
in a room."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from typing import Any

import pytest

from server.domain.draw import (
    RECONNECT_GRACE_MS,
    Draw,
    Phase,
    Stays,
    commitment_of,
    digest_of,
    draw_spec,
    entrant_hash,
    masked,
    pick,
    verify,
)
from server.errors import SoukError

T0 = 1_764_000_000_000
SEED = "11" * 32


def make(raw: dict[str, Any] | None = None, scope: str = "room") -> Draw:
    spec = draw_spec({"title": "福袋", "prize": {"product": "p1"}, "winners": 2, "duration_s": 60,
                      **(raw or {})}, scope, T0)
    return Draw.create("d1", "shop", scope, "r1", spec, "boss", SEED, T0)


def enter(d: Draw, user: str, at: int = T0 + 1, **kw: Any) -> bool:
    facts: dict[str, Any] = {"customer": True, "banned": False, "watched_ms": None, "member": None}
    facts.update(kw)
    return d.check_entry(user, at, **facts)


def independent_pick(seed_hex: str, users: list[str], k: int, beacon_hex: str | None = None) -> list[str]:
    """The function as docs/draws.md states it, written again from the text."""
    key = bytes.fromhex(seed_hex)
    if beacon_hex is not None:
        key = hashlib.sha256(bytes.fromhex(seed_hex) + bytes.fromhex(beacon_hex)).digest()
    hashes = sorted({hashlib.sha256(u.encode("utf-8")).hexdigest() for u in users})
    return sorted(hashes, key=lambda h: (hmac.new(key, h.encode(), "sha256").hexdigest(), h))[:k]


def test_the_winner_function_is_pinned() -> None:
    """A known answer: changing the function breaks every published verification."""
    users = [f"u{i}" for i in range(10)]
    won = pick(SEED, [entrant_hash(u) for u in users], 3)
    assert won == independent_pick(SEED, users, 3)
    assert [next(u for u in users if entrant_hash(u) == h) for h in won] == PINNED
    beacon = "ab" * 32
    assert pick(SEED, [entrant_hash(u) for u in users], 3, beacon) == independent_pick(SEED, users, 3, beacon)
    assert pick(SEED, [entrant_hash(u) for u in users], 3, beacon) != won  # the beacon matters


PINNED = ["u7", "u5", "u8"]


def test_pick_ignores_order_and_duplicates_and_caps_at_the_entrants() -> None:
    hashes = [entrant_hash(f"u{i}") for i in range(50)]
    assert pick(SEED, hashes, 5) == pick(SEED, list(reversed(hashes)) + hashes[:10], 5)
    assert len(pick(SEED, hashes[:3], 10)) == 3
    assert pick(SEED, [], 3) == []


def test_every_entrant_has_the_same_chance() -> None:
    """Over many seeds, each of 10 entrants wins one of 2 prizes about 20% of the time."""
    hashes = [entrant_hash(f"u{i}") for i in range(10)]
    wins: Counter[str] = Counter()
    n = 4000
    for i in range(n):
        seed = hashlib.sha256(str(i).encode()).hexdigest()
        wins.update(pick(seed, hashes, 2))
    for h in hashes:
        assert 0.16 < wins[h] / n < 0.24, wins[h]


def test_verify_checks_commitment_digest_and_published_winners() -> None:
    hashes = [entrant_hash(f"u{i}") for i in range(20)]
    won = pick(SEED, hashes, 3)
    good = verify(SEED, commitment_of(SEED), hashes, 3, None, won, digest_of(sorted(hashes)))
    assert good.ok and good.matches and good.winners == won
    assert not verify("22" * 32, commitment_of(SEED), hashes, 3).ok  # another seed
    assert not verify(SEED, commitment_of(SEED), hashes, 3, None, list(reversed(won))).ok
    assert not verify(SEED, commitment_of(SEED), hashes[1:], 3, None, None, digest_of(sorted(hashes))).ok
    with pytest.raises(SoukError):
        verify(SEED, commitment_of(SEED), ["not-a-hash"], 1)
    with pytest.raises(SoukError):
        verify("zz", commitment_of(SEED), hashes, 1)


def test_commitment_is_sha256_of_the_seed_bytes() -> None:
    assert commitment_of(SEED) == hashlib.sha256(bytes.fromhex(SEED)).hexdigest()
    assert make().commitment == commitment_of(SEED)


def test_spec_validation() -> None:
    for bad in ({"winners": 0}, {"winners": 1001}, {"duration_s": 1}, {"title": ""},
                {"prize": {}}, {"prize": {"product": "p1", "coupon": {"value": 100}}},
                {"prize": {"coupon": {"value": 0}}}, {"condition": {"keyword": ""}},
                {"condition": {"other": 1}}, {"condition": {"watch_s": 0}},
                {"condition": "x"}, {"prize": "p1"}):
        with pytest.raises(SoukError) as exc:
            make(bad)
        assert exc.value.code == "invalid", bad
    with pytest.raises(SoukError):
        make({"condition": {"watch_s": 30}}, scope="group")  # time watched: rooms only
    d = make({"prize": {"coupon": {"kind": "amount", "value": 500, "title": "5 off"}},
              "condition": {"keyword": "  要  ", "watch_s": 30, "group": "g1"}})
    assert d.condition.keyword == "要" and d.prize.coupon is not None and d.prize.title == "5 off"


def test_entry_rules() -> None:
    d = make()
    assert enter(d, "a")
    d.entered.add("a")
    assert not enter(d, "a")  # once per user: not an error
    refusals = {
        "staff": ({"customer": False}, "forbidden"),
        "banned": ({"banned": True}, "banned"),
    }
    for user, (kw, code) in refusals.items():
        with pytest.raises(SoukError) as exc:
            enter(d, user, **kw)
        assert exc.value.code == code
    with pytest.raises(SoukError) as exc:
        enter(d, "late", at=d.ends_at)
    assert exc.value.code == "ended"


def test_conditions() -> None:
    d = make({"condition": {"keyword": "福", "watch_s": 30, "group": "g1"}})
    with pytest.raises(SoukError) as exc:  # a keyword draw is entered by chat
        enter(d, "a", watched_ms=60_000, member=True)
    assert exc.value.extra["keyword"] == "福"
    with pytest.raises(SoukError) as exc:
        enter(d, "a", watched_ms=29_001, member=True, by_chat=True)
    assert exc.value.extra["wait_s"] == 1
    with pytest.raises(SoukError) as exc:
        enter(d, "a", watched_ms=30_000, member=False, by_chat=True)
    assert exc.value.extra["group"] == "g1"
    assert enter(d, "a", watched_ms=30_000, member=True, by_chat=True)
    assert d.chat_enters("我要福袋") and d.chat_enters("福") and not d.chat_enters("hello")
    g = make(scope="group")
    assert g.member_group() == "r1"  # a group draw: its own group's members
    with pytest.raises(SoukError):
        enter(g, "a", member=False)


def test_phases_and_the_view_hides_the_seed_until_done() -> None:
    d = make()
    view = d.view()
    assert view["phase"] == "open" and "seed" not in view and view["commitment"] == commitment_of(SEED)
    assert not d.due(d.ends_at - 1) and d.due(d.ends_at)
    entrants = {f"u{i}": f"User{i}" for i in range(5)}
    digest = d.close(d.ends_at, [entrant_hash(u) for u in entrants], viewers=42)
    assert d.phase is Phase.DRAWING and digest == digest_of(sorted(entrant_hash(u) for u in entrants))
    assert "seed" not in d.view() and d.view()["digest"] == digest
    with pytest.raises(SoukError):
        enter(d, "x")
    winners = d.draw(entrants, None)
    assert winners == d.draw(entrants, None)  # deterministic
    assert [w.hash for w in winners] == pick(SEED, map(entrant_hash, entrants), 2)
    d.settle(winners, None)
    v = d.view()
    assert v["phase"] == "done" and v["seed"] == SEED
    assert v["winners"] == [{"user": w.user, "name": masked(w.name)} for w in winners]
    with pytest.raises(SoukError):
        d.cancel()
    c = make()
    c.cancel()
    assert c.phase is Phase.CANCELLED
    with pytest.raises(SoukError):
        c.close(c.ends_at, [], 0)


def test_masked_names() -> None:
    assert masked("小明") == "小*"
    assert masked("Alice") == "A*"
    assert masked("z") == "z*"
    assert masked("  ") == "*"


def test_stays_count_reconnects_within_the_grace_as_continuous() -> None:
    s = Stays()
    s.joined("r", "u", T0)
    s.joined("r", "u", T0 + 1000)  # a second connection
    s.left("r", "u", T0 + 2000)
    assert s.watched_ms("r", "u", T0 + 5000) == 5000  # one connection still in
    s.left("r", "u", T0 + 10_000)
    assert s.watched_ms("r", "u", T0 + 11_000) == 0  # away
    s.joined("r", "u", T0 + 10_000 + RECONNECT_GRACE_MS)  # back just in time
    assert s.watched_ms("r", "u", T0 + 60_000) == 60_000
    s.left("r", "u", T0 + 60_000)
    s.joined("r", "u", T0 + 60_001 + RECONNECT_GRACE_MS)  # too late: a new stay
    assert s.watched_ms("r", "u", T0 + 100_000) == 100_000 - 60_001 - RECONNECT_GRACE_MS
    s.left("r", "u", T0 + 100_000)
    assert s.sweep(T0 + 100_000 + RECONNECT_GRACE_MS + 1) == 1 and len(s) == 0
    s.left("r", "nobody", T0)  # never joined: nothing happens
