"""Invites (裂变): attribution of joins to inviters.

Rules:
- A member's invite code is theirs for the shop; a join carrying it is attributed to them.
- A self-invite never counts; an invitee counts once per shop, for the first inviter that
  brought them, and only on their first join of any group of the shop (a repeat join, or a
  member who was already in the shop's groups, is not a new invitee).
- Every `threshold` counted invitees fire one reward. That rule is counted in SQL when the
  invite is written (server/store/engagement.py, `add_invite`): several nodes may attribute
  joins to one inviter at once, and only the record sees them all.
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
