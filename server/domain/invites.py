"""Invites (裂变): attribution of joins to inviters and the "invite N, get a reward" rule.

Rules:
- A member's invite code is theirs for the shop; a join carrying it is attributed to them.
- A self-invite never counts; an invitee counts once per shop, for the first inviter that
  brought them, and only on their first join of any group of the shop (a repeat join, or a
  member who was already in the shop's groups, is not a new invitee).
- Every `threshold` counted invitees fire one reward. `rewards_due` compares the thresholds
  crossed with the rewards already granted, so a reward is never granted twice for the same
  invitees, whatever the order or concurrency of joins (the adapter applies it in one
  synchronous step with the attribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DEFAULT_THRESHOLD: Final = 3


@dataclass
class InviteLedger:
    """One shop's invites."""

    threshold: int = DEFAULT_THRESHOLD
    inviter_of: dict[str, str] = field(default_factory=dict)  # invitee -> inviter
    invitees: dict[str, list[str]] = field(default_factory=dict)  # inviter -> invitees
    rewarded: dict[str, int] = field(default_factory=dict)  # inviter -> rewards granted
    known: set[str] = field(default_factory=set)  # users who were ever members of the shop

    def attribute(self, inviter: str, invitee: str) -> bool:
        """Count `invitee` for `inviter` if the rules allow; True when it counted."""
        if inviter == invitee or invitee in self.inviter_of or invitee in self.known:
            self.known.add(invitee)
            return False
        self.inviter_of[invitee] = inviter
        self.invitees.setdefault(inviter, []).append(invitee)
        self.known.add(invitee)
        return True

    def rewards_due(self, inviter: str) -> int:
        """How many rewards to grant now (0 or more); marks them granted."""
        crossed = len(self.invitees.get(inviter, [])) // self.threshold
        due = crossed - self.rewarded.get(inviter, 0)
        if due > 0:
            self.rewarded[inviter] = crossed
        return max(0, due)

    def unreward(self, inviter: str, count: int) -> None:
        """The reward's write failed: it is due again."""
        self.rewarded[inviter] = self.rewarded.get(inviter, 0) - count
