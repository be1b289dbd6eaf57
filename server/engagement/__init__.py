"""Engagement: coupons, polls, check-ins and points, invites, show-your-order, member layers
(docs/engagement.md).

Why a package: the rules are pure (server.domain.coupons / polls / checkin / invites /
layers); this package adds the clock, ids, durability, the bus and, in a cluster, the
change notices. Callers hold one `Engagement`; its parts are small modules named after what
they hold:

- `adapter`: `Engagement`, the wiring, the start-up load, the routing of other nodes' notices
- `coupons`: the coupon book (shared with commerce's `buy`), issuing, rewards' validity
- `polls`: open polls, votes in commit order, live results, timed closes
- `checkins`: daily check-in streaks, points, points turned into a coupon
- `invites`: invite codes, joins attributed to them, rewards per threshold
- `showcase`: show-your-order posts and their one reward
- `layers`: thresholds, members by layer (their numbers from the insights), targeted sales
- `plumbing`: store, clock, ids, bus, notices and tasks every part shares
"""

from server.engagement.adapter import Engagement
from server.engagement.layers import MemberNumbers

__all__ = ["Engagement", "MemberNumbers"]
