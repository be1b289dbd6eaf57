"""Waiting for a durable order write, and the store's refusals as the buyer's errors.

Why a module of its own: a sale order and a team order both answer the buyer only once their
write is durable, and a replay of the same key waits on the same write; both flows share the
map of writes under way (`Pending`) and the one translation of the store's exceptions into
protocol codes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from client_sdk.protocol import Code
from server.errors import SoukError
from server.store.ledger import CouponConflict, KnownKey, StockConflict

log = logging.getLogger("souk.commerce")

# order id -> its durable write under way (a sale order in a batch, or a team write)
Pending = dict[str, asyncio.Future[Any]]

# what the buyer reads when the store refuses (the code says why; see client_sdk Code)
REFUSALS: dict[str, str] = {
    Code.SOLD_OUT: "sold out",
    Code.LIMIT_REACHED: "you reached the per-buyer limit of this sale",
    Code.NOT_LIVE: "the sale has not started",
    Code.ENDED: "the sale or team closed before the order was recorded",
    Code.TEAM_FULL: "this team is full",
    Code.CONFLICT: "this key was used for another order",
    Code.ALREADY_IN_TEAM: "you are already in an open team of this offer",
}


async def wait_write(task: asyncio.Future[Any]) -> None:
    """Wait for a durable write; a refusal of the store becomes the buyer's error with
    the store's reason (in a cluster the shared guard decides, not this node's memory).
    `KnownKey` passes through: the caller answers with the other node's order."""
    try:
        await asyncio.shield(task)
    except CouponConflict:
        raise SoukError(Code.CONFLICT, "this coupon was already used") from None
    except StockConflict as exc:
        raise SoukError(exc.code, REFUSALS.get(exc.code, str(exc))) from None
    except KnownKey:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("order write failed: %r", exc)
        raise SoukError(Code.UNAVAILABLE, "could not record the order; try again") from None
