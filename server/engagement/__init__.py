"""Engagement: coupons, polls, check-ins and points, invites, show-your-order, member layers
(docs/engagement.md).

Why a package: the rules are pure (server.domain.coupons / polls / checkin / invites /
layers); this package adds the clock, ids, durability, the bus and, in a cluster, the
change notices. Callers hold one `Engagement` (server/engagement/adapter.py).
"""

from server.engagement.adapter import Engagement

__all__ = ["Engagement"]
