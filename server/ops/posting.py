"""What a text a client posts must pass, wherever it is posted (chat, questions, posts).

Why one function: the community's link/ad filter applies to room chat, questions and
show-your-order posts alike (staff exempt), and a group adds its own rules (members only;
welfare groups carry merchant notices only). Three ops post text; they ask here, so the
rules cannot differ between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.auth import Identity
    from server.community import Community


def check_text(community: Community, text: str, ident: Identity, ch: str | None = None) -> None:
    """The link/ad filter (and, in a group, membership and the welfare rule)."""
    if ch is not None and ch.startswith("group:"):
        community.check_group_chat(ch[6:], ident.public(), text)
    else:
        community.check_text(text, ident.role)
