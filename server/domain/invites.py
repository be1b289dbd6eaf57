"""Invites (裂变): the "invite N, get a reward" rule.

Rules:
- A member's invite code is theirs for the shop; a join carrying it is attributed to them.
- A self-invite never counts; an invitee counts once per shop, for the first inviter that
  brought them, and only on their first join of any group of the shop (a repeat join, or a
  member who was already in the shop's groups, is not a new invitee).
- Every `threshold` counted invitees fire one reward: the rewards due are the thresholds
  crossed less the rewards already granted, so a reward is never granted twice for the same
  invitees, whatever the order or concurrency of joins.

Where they are applied: the attribution and the count happen in the invite's transaction
(server/store/engagement.py, `add_invite`, under a lock on the inviter), because several
nodes may attribute joins to one inviter at once and only the record sees them all.
"""

from __future__ import annotations

from typing import Final

DEFAULT_THRESHOLD: Final = 3


def rewards_due(invited: int, granted: int, threshold: int = DEFAULT_THRESHOLD) -> int:
    """How many rewards to grant now, for `invited` counted invitees of whom `granted`
    rewards were already given (0 or more)."""
    return max(0, invited // threshold - granted)
