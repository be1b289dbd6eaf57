"""A shop's community groups (社群): tiers, topics, caps with spill-over, members and tags.

Sans-I/O. Why spill-over lives here: "a group holds at most 350 members; 150–200 is best; a
full group spills into a new one" (the merchants' own practice) is a rule about groups, not about sockets, and
it must give the same placement on every backend. Ids for groups the rules create are passed
in by the caller (`new_id`), so the rules stay deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from client_sdk.protocol import Code
from server.domain.errors import SoukError

TIERS = ("core", "normal", "welfare")
DEFAULT_CAP = 350
IDEAL_MAX = 200
MAX_CAP = 2000
MAX_TOPIC_CHARS = 64
MAX_TAG_CHARS = 64
MAX_BOUGHT_TAGS = 200
DEFAULT_WELFARE_WEEKLY_CAP = 3
# Weeks for the welfare cap are counted in the shop's local time; China Standard Time by
# default, the market these community practices come from.
DEFAULT_WEEK_TZ_OFFSET_S = 8 * 3600
STAFF_ROLES = frozenset({"streamer", "moderator", "admin"})


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SoukError(Code.INVALID, f"{what} must be a non-empty string")
    text: str = value.strip()
    if len(text) > limit:
        raise SoukError(Code.INVALID, f"{what} is longer than {limit} characters")
    return text


def _opt_text(value: Any, what: str, limit: int) -> str | None:
    return None if value is None else _text(value, what, limit)


def iso_week(now_ms: int, tz_offset_s: int = DEFAULT_WEEK_TZ_OFFSET_S) -> tuple[int, int]:
    """(ISO year, ISO week) of an instant in a fixed-offset local time."""
    local = datetime.fromtimestamp((now_ms / 1000) + tz_offset_s, tz=UTC)
    year, week, _ = local.isocalendar()
    return (year, week)


def week_bounds(now_ms: int, tz_offset_s: int = DEFAULT_WEEK_TZ_OFFSET_S) -> tuple[int, int]:
    """[start, end) in epoch ms of the ISO week (Monday 00:00 local) that holds `now_ms`: the
    window a shared store counts a welfare group's notices in."""
    local = datetime.fromtimestamp((now_ms / 1000) + tz_offset_s, tz=UTC)
    monday = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0,
                                                             microsecond=0)
    start = int(monday.timestamp() * 1000) - tz_offset_s * 1000
    return start, start + 7 * 86_400_000


@dataclass
class Tags:
    """What a shop knows about a member (用户分层): purchases, value, where they came from."""

    bought: list[str] = field(default_factory=list)
    big_customer: bool = False
    source: str | None = None
    invited_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bought": list(self.bought),
            "big_customer": self.big_customer,
            "source": self.source,
            "invited_by": self.invited_by,
        }


@dataclass
class Member:
    user: str
    name: str
    role: str
    joined_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "name": self.name,
            "role": self.role,
            "joined_at": self.joined_at,
        }


RECENT_NOTICES = 20


@dataclass
class Group:
    id: str
    shop: str
    tier: str
    topic: str
    cap: int
    created_at: int
    title: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    notices_at: list[int] = field(default_factory=list)
    # the last notices as the group heard them, oldest first (a late member's snapshot)
    recent_notices: list[dict[str, Any]] = field(default_factory=list)

    def remember_notice(self, notice: dict[str, Any]) -> None:
        self.recent_notices.append(notice)
        del self.recent_notices[:-RECENT_NOTICES]

    @property
    def full(self) -> bool:
        return len(self.members) >= self.cap

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shop": self.shop,
            "tier": self.tier,
            "topic": self.topic,
            "title": self.title,
            "cap": self.cap,
            "members": len(self.members),
            "over_ideal": len(self.members) > IDEAL_MAX,
            "created_at": self.created_at,
        }


@dataclass
class JoinResult:
    """Where a member landed; `created` is set when spill-over had to open a new group."""

    group: Group
    member: Member
    created: Group | None = None
    already_member: bool = False
    over_ideal: bool = False


class Directory:
    """Every group of every shop in this process, and each shop's member tags."""

    def __init__(
        self,
        *,
        welfare_weekly_cap: int = DEFAULT_WELFARE_WEEKLY_CAP,
        week_tz_offset_s: int = DEFAULT_WEEK_TZ_OFFSET_S,
    ) -> None:
        self.groups: dict[str, Group] = {}
        self.tags: dict[tuple[str, str], Tags] = {}
        self.welfare_weekly_cap = welfare_weekly_cap
        self.week_tz_offset_s = week_tz_offset_s

    # -- groups -----------------------------------------------------------------------
    def create_group(self, gid: str, shop: str, fields: dict[str, Any], now_ms: int) -> Group:
        if not isinstance(fields, dict):
            raise SoukError(Code.INVALID, "group fields must be a map")
        tier = fields.get("tier")
        if tier not in TIERS:
            raise SoukError(Code.INVALID, f"tier must be one of {', '.join(TIERS)}")
        topic = _text(fields.get("topic"), "topic", MAX_TOPIC_CHARS)
        cap = fields.get("cap", DEFAULT_CAP)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 2 <= cap <= MAX_CAP:
            raise SoukError(Code.INVALID, f"cap must be an integer 2..{MAX_CAP}")
        title = _opt_text(fields.get("title"), "title", MAX_TOPIC_CHARS)
        if gid in self.groups:
            raise SoukError(Code.CONFLICT, "group id already used")
        group = Group(gid, _text(shop, "shop", 64), tier, topic, cap, now_ms, title)
        self.groups[gid] = group
        return group

    def get(self, gid: Any) -> Group:
        if not isinstance(gid, str) or gid not in self.groups:
            raise SoukError(Code.NOT_FOUND, "no such group")
        return self.groups[gid]

    def siblings(self, shop: str, tier: str, topic: str) -> list[Group]:
        """Groups sharing shop, tier and topic, oldest first: the spill-over order."""
        return sorted(
            (
                g
                for g in self.groups.values()
                if g.shop == shop and g.tier == tier and g.topic.casefold() == topic.casefold()
            ),
            key=lambda g: (g.created_at, g.id),
        )

    # -- membership -------------------------------------------------------------------
    def join(
        self,
        user: dict[str, Any],
        now_ms: int,
        new_id: Callable[[], str],
        *,
        group_id: Any = None,
        tier: Any = None,
        topic: Any = None,
        shop: Any = None,
    ) -> JoinResult:
        """Place a member: into `group_id`, or by tier+topic; a full target spills over.

        Spill-over goes to the oldest sibling (same shop, tier, topic) with room; when all are
        full, a new sibling is created with the same cap. A member already in a sibling stays
        where they are (joining twice is harmless, e.g. a retried request).
        """
        uid, name, role = user.get("id"), user.get("name"), user.get("role", "member")
        if not isinstance(uid, str) or not uid:
            raise SoukError(Code.INVALID, "user id required")
        name = name if isinstance(name, str) and name else uid
        if group_id is not None:
            target = self.get(group_id)
            shop_, tier_, topic_ = target.shop, target.tier, target.topic
        else:
            if tier not in TIERS:
                raise SoukError(Code.INVALID, "give a group id, or a tier and a topic")
            tier_ = str(tier)
            topic_ = _text(topic, "topic", MAX_TOPIC_CHARS)
            shop_ = _text(shop, "shop", 64)
            target = None
        family = self.siblings(shop_, tier_, topic_)
        for g in family:
            if uid in g.members:
                return JoinResult(g, g.members[uid], already_member=True)
        if target is not None and uid in target.removed:
            raise SoukError(Code.FORBIDDEN, "you were removed from this group")
        candidates = ([target] if target is not None else []) + [
            g for g in family if g is not target
        ]
        landing = next((g for g in candidates if not g.full and uid not in g.removed), None)
        created = None
        if landing is None:
            cap = target.cap if target is not None else (family[-1].cap if family else DEFAULT_CAP)
            base = target or (family[0] if family else None)
            landing = self.create_group(
                new_id(),
                shop_,
                {"tier": tier_, "topic": topic_, "cap": cap, "title": base.title if base else None},
                now_ms,
            )
            created = landing
        member = Member(uid, name[:64], role if isinstance(role, str) else "member", now_ms)
        landing.members[uid] = member
        return JoinResult(landing, member, created, over_ideal=len(landing.members) > IDEAL_MAX)

    def leave(self, user_id: str, group_id: Any) -> Member:
        group = self.get(group_id)
        member = group.members.pop(user_id, None)
        if member is None:
            raise SoukError(Code.NOT_FOUND, "not a member of this group")
        return member

    def remove(self, user_id: Any, group_id: Any) -> Member:
        """Moderator removal: the member leaves and may not rejoin this group."""
        if not isinstance(user_id, str):
            raise SoukError(Code.INVALID, "user must be a string")
        member = self.leave(user_id, group_id)
        self.groups[group_id].removed.add(user_id)
        return member

    def is_member(self, user_id: str, group_id: str) -> bool:
        g = self.groups.get(group_id)
        return g is not None and user_id in g.members

    def groups_of(self, user_id: str) -> list[Group]:
        return [g for g in self.groups.values() if user_id in g.members]

    # -- tags -------------------------------------------------------------------------
    def tags_of(self, shop: str, user_id: str) -> Tags:
        return self.tags.get((shop, user_id)) or Tags()

    def update_tags(self, shop: str, user_id: str, fields: dict[str, Any]) -> Tags:
        """Merge tags: `bought` adds products (deduplicated), the others overwrite when given.

        `invited_by` is set once (the first inviter gets the credit for the growth campaign).
        """
        if not isinstance(fields, dict):
            raise SoukError(Code.INVALID, "tags must be a map")
        tags = self.tags.setdefault((shop, user_id), Tags())
        bought = fields.get("bought")
        if bought is not None:
            items = [bought] if isinstance(bought, str) else bought
            if not isinstance(items, list):
                raise SoukError(Code.INVALID, "bought must be a product id or a list of them")
            for item in items:
                product = _text(item, "bought product", MAX_TAG_CHARS)
                if product not in tags.bought:
                    if len(tags.bought) >= MAX_BOUGHT_TAGS:
                        tags.bought.pop(0)
                    tags.bought.append(product)
        if "big_customer" in fields:
            if not isinstance(fields["big_customer"], bool):
                raise SoukError(Code.INVALID, "big_customer must be a boolean")
            tags.big_customer = fields["big_customer"]
        if fields.get("source") is not None:
            tags.source = _text(fields["source"], "source", MAX_TAG_CHARS)
        if fields.get("invited_by") is not None and tags.invited_by is None:
            inviter = _text(fields["invited_by"], "invited_by", MAX_TAG_CHARS)
            if inviter == user_id:
                raise SoukError(Code.INVALID, "a member cannot invite themselves")
            tags.invited_by = inviter
        return tags

    # -- notices ----------------------------------------------------------------------
    def notices_this_week(self, group: Group, now_ms: int) -> int:
        week = iso_week(now_ms, self.week_tz_offset_s)
        return sum(1 for t in group.notices_at if iso_week(t, self.week_tz_offset_s) == week)

    def record_notice(self, group_id: Any, now_ms: int) -> Group:
        """Count a merchant notice; welfare groups take at most N per ISO week (cap_reached).

        Why a hard cap: welfare groups that post more than 2–3 times a week get muted by their
        members, and a muted group is a lost channel.
        """
        group = self.get(group_id)
        if group.tier == "welfare":
            used = self.notices_this_week(group, now_ms)
            if used >= self.welfare_weekly_cap:
                raise SoukError(
                    Code.CAP_REACHED,
                    f"welfare group {group.id} already had {used} notices this week "
                    f"(cap {self.welfare_weekly_cap})",
                    group=group.id,
                )
        group.notices_at.append(now_ms)
        # keep only what the weekly cap can still look at (this week and last)
        horizon = now_ms - 8 * 86_400_000
        group.notices_at = [t for t in group.notices_at if t >= horizon]
        return group

    def notice_cap(self, group_id: str, now_ms: int) -> tuple[int, int, int] | None:
        """(week start, week end, cap) for a welfare group: what a shared store checks again
        under its own lock, since another node may have posted this week; None: no cap."""
        group = self.get(group_id)
        if group.tier != "welfare":
            return None
        return (*week_bounds(now_ms, self.week_tz_offset_s), self.welfare_weekly_cap)

    def unrecord_notice(self, group_id: str, at_ms: int) -> None:
        """Take back a notice counted by `record_notice` that was not kept after all."""
        group = self.groups.get(group_id)
        if group is not None and at_ms in group.notices_at:
            group.notices_at.remove(at_ms)

    def check_post(self, group_id: Any, user: dict[str, Any]) -> Group:
        """May this user chat in this group? Members of non-welfare groups and staff may.

        Welfare groups carry merchant notices only, so members cannot post there.
        """
        group = self.get(group_id)
        role = user.get("role")
        if role in STAFF_ROLES:
            return group
        if user.get("id") not in group.members:
            raise SoukError(Code.FORBIDDEN, "not a member of this group")
        if group.tier == "welfare":
            raise SoukError(Code.FORBIDDEN, "welfare groups carry merchant notices only")
        return group
