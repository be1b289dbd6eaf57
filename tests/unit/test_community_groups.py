"""Groups: tiers, spill-over at the cap, tags, removal, the welfare weekly notice cap."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from server.domain.community import Directory
from server.errors import SoukError

T0 = 1_700_000_000_000


def make(cap: int = 3, tier: str = "normal") -> tuple[Directory, str, Callable[[], str]]:
    d = Directory()
    counter = itertools.count(100)
    d.create_group("g1", "shop", {"tier": tier, "topic": "Tea", "cap": cap}, T0)
    return d, "g1", lambda: f"g{next(counter)}"


def user(n: int) -> dict[str, str]:
    return {"id": f"u{n}", "name": f"User {n}", "role": "member"}


def test_spill_over_into_new_group_at_cap_then_fills_oldest_with_room() -> None:
    d, gid, new_id = make(cap=3)
    landed = [d.join(user(i), T0 + i, new_id, group_id=gid).group.id for i in range(7)]
    assert landed == ["g1", "g1", "g1", "g100", "g100", "g100", "g101"]
    spill = d.groups["g100"]
    assert (spill.tier, spill.topic, spill.cap, spill.shop) == ("normal", "Tea", 3, "shop")
    d.leave("u1", "g1")
    # joining the full g100 by id spills back into g1, which has room again
    assert d.join(user(50), T0, new_id, group_id="g100").group.id == "g1"


def test_placement_by_tier_and_topic() -> None:
    d, _, new_id = make(cap=2)
    r = d.join(user(1), T0, new_id, tier="normal", topic="tea", shop="shop")
    assert r.group.id == "g1"  # topics match case-insensitively
    r = d.join(user(2), T0, new_id, tier="core", topic="Tea", shop="shop")
    assert r.created is not None and r.group.tier == "core"
    with pytest.raises(SoukError):
        d.join(user(3), T0, new_id, tier="vip", topic="Tea", shop="shop")


def test_join_is_idempotent_within_a_family() -> None:
    d, gid, new_id = make(cap=2)
    for i in range(3):
        d.join(user(i), T0, new_id, group_id=gid)
    again = d.join(user(2), T0, new_id, group_id=gid)
    assert again.already_member and again.group.id == "g100"
    assert sum(len(g.members) for g in d.groups.values()) == 3


def test_over_ideal_warning_above_200() -> None:
    d, gid, new_id = make(cap=350)
    results = [d.join(user(i), T0, new_id, group_id=gid) for i in range(201)]
    assert not results[199].over_ideal and results[200].over_ideal
    assert d.groups[gid].to_dict()["over_ideal"] is True


def test_removed_member_cannot_rejoin() -> None:
    d, gid, new_id = make()
    d.join(user(1), T0, new_id, group_id=gid)
    d.remove("u1", gid)
    with pytest.raises(SoukError) as err:
        d.join(user(1), T0, new_id, group_id=gid)
    assert err.value.code == "forbidden"


@pytest.mark.parametrize(
    "fields",
    [
        {"tier": "gold", "topic": "x"},
        {"tier": "core"},
        {"tier": "core", "topic": "x", "cap": 1},
        {"tier": "core", "topic": "x", "cap": "10"},
        {"tier": "core", "topic": "y" * 65},
    ],
)
def test_group_fields_validated(fields: dict[str, object]) -> None:
    with pytest.raises(SoukError) as err:
        Directory().create_group("g", "shop", fields, T0)
    assert err.value.code == "invalid"


def test_tags_merge_and_inviter_set_once() -> None:
    d = Directory()
    d.update_tags("shop", "u1", {"bought": "p1", "source": "live", "invited_by": "u9"})
    d.update_tags("shop", "u1", {"bought": ["p2", "p1"], "big_customer": True, "invited_by": "u8"})
    t = d.tags_of("shop", "u1").to_dict()
    assert t == {"bought": ["p1", "p2"], "big_customer": True, "source": "live", "invited_by": "u9"}
    with pytest.raises(SoukError):
        d.update_tags("shop", "u2", {"invited_by": "u2"})
    with pytest.raises(SoukError):
        d.update_tags("shop", "u2", {"big_customer": "yes"})


def test_welfare_cap_three_per_iso_week() -> None:
    d, gid, _ = make(tier="welfare")
    # Monday 2026-11-23 10:00 Beijing time = 02:00 UTC
    monday = int(datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp() * 1000)
    for i in range(3):
        d.record_notice(gid, monday + i * 86_400_000)
    with pytest.raises(SoukError) as err:
        d.record_notice(gid, monday + 4 * 86_400_000)
    assert err.value.code == "cap_reached"
    # the next ISO week (Monday 00:30 Beijing = Sunday 16:30 UTC) starts a fresh count
    next_week = int(datetime(2026, 11, 29, 16, 30, tzinfo=UTC).timestamp() * 1000)
    d.record_notice(gid, next_week)


def test_normal_groups_have_no_notice_cap() -> None:
    d, gid, _ = make(tier="normal")
    for i in range(10):
        d.record_notice(gid, T0 + i)


def test_welfare_groups_take_no_member_posts() -> None:
    d, gid, new_id = make(tier="welfare")
    d.join(user(1), T0, new_id, group_id=gid)
    with pytest.raises(SoukError) as err:
        d.check_post(gid, user(1))
    assert err.value.code == "forbidden"
    d.check_post(gid, {"id": "admin", "role": "admin"})
    with pytest.raises(SoukError):
        d.check_post(gid, user(2))  # not a member


def test_week_bounds_match_the_iso_week_of_the_cap() -> None:
    from server.domain.community import iso_week, week_bounds

    for now in (1_764_000_000_000, 1_764_000_000_000 + 3 * 86_400_000 + 12_345):
        start, end = week_bounds(now)
        assert start <= now < end and end - start == 7 * 86_400_000
        assert iso_week(start) == iso_week(now) == iso_week(end - 1)
        assert iso_week(start - 1) != iso_week(now) and iso_week(end) != iso_week(now)
