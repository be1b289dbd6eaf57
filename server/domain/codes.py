"""Refusal codes the commerce rules raise.

Why a copy: the domain imports nothing of the project but itself and `server.errors`, so it
cannot import `client_sdk.protocol.Code`. These strings must equal the protocol's; a unit test
(`tests/unit/test_commerce_boundaries.py`) checks that they do, so they can never drift apart.
"""

from __future__ import annotations

from typing import Final

INVALID: Final = "invalid"
NOT_FOUND: Final = "not_found"
CONFLICT: Final = "conflict"
FORBIDDEN: Final = "forbidden"
SOLD_OUT: Final = "sold_out"
LIMIT_REACHED: Final = "limit_reached"
NOT_LIVE: Final = "not_live"
ENDED: Final = "ended"
TEAM_FULL: Final = "team_full"
ALREADY_IN_TEAM: Final = "already_in_team"
