"""The flash-sale stock gate of a cluster: one Redis Lua script decides a buy for every node.

Why: several nodes sell the same sale, and each node's in-memory FlashSale only knows its own
buyers. Before an order is written, one atomic script checks for the whole cluster that the
sale is live, enough stock is left, the buyer stays within the per-user limit and the (user,
key) was never used; PostgreSQL then commits the order behind the same guards in SQL (the
ledger, server/store/ledger.py): the final word, so even a gate rebuilt from stale numbers
cannot oversell. Redis is never the source of truth: a sale's gate is (re)built from the
database on start-up and whenever the gate finds its keys gone (Redis restarted or flushed),
by one script that writes only while the keys are still missing, so nodes rebuilding at once
agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from client_sdk.protocol import Code
from server.domain.order import Order

if TYPE_CHECKING:  # the embedded server never loads the Redis client for its ledger
    from redis.asyncio import Redis

# KEYS: stock, users, keys, meta.  ARGV: user, key, qty, now_ms.
GATE_TAKE_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0} end
local uk = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[3], uk) == 1 then return {'dup', 0} end
local m = redis.call('HMGET', KEYS[4], 'starts_at', 'ends_at', 'limit', 'closed')
local now, qty = tonumber(ARGV[4]), tonumber(ARGV[3])
if m[4] == '1' or now >= tonumber(m[2]) then return {'ended', 0} end
if now < tonumber(m[1]) then return {'not_live', 0} end
local left = tonumber(redis.call('GET', KEYS[1]))
if left < qty then return {'sold_out', left} end
local had = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if had + qty > tonumber(m[3]) then return {'limit', had} end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], uk, qty)
return {'ok', left - qty}
"""

# KEYS: stock, users, keys.  ARGV: user, key, qty.  (only when the gate still holds the key)
GATE_GIVE_LUA: Final = """
local uk = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HDEL', KEYS[3], uk) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[3])
  redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[3]))
end
return 1
"""

# KEYS: stock, users, keys, meta.  ARGV: stock_left, starts_at, ends_at, limit, closed, ttl_s,
# then user, units pairs count, pairs..., then user|key, qty pairs.
GATE_BUILD_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[4], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4],
           'closed', ARGV[5])
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[1], ARGV[1])
for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ARGV[6]) end
return 1
"""


# the gate's refusals as the codes the buyer hears
GATE_CODES: Final = {"sold_out": Code.SOLD_OUT, "limit": Code.LIMIT_REACHED,
                     "not_live": Code.NOT_LIVE, "ended": Code.ENDED}


class StockGate:
    """The cluster-wide atomic check of a flash-sale buy, in Redis."""

    def __init__(self, redis: Redis, prefix: str = "souk:", ttl_s: int = 7 * 86400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._take = redis.register_script(GATE_TAKE_LUA)
        self._give = redis.register_script(GATE_GIVE_LUA)
        self._build = redis.register_script(GATE_BUILD_LUA)

    def keys(self, sale: str) -> list[str]:
        tag = f"{self.prefix}{{sale:{sale}}}"
        return [tag + ":stock", tag + ":users", tag + ":keys", tag + ":meta"]

    async def take(self, sale: str, user: str, key: str, qty: int, now_ms: int) -> tuple[str, int]:
        verdict, n = await self._take(keys=self.keys(sale), args=[user, key, qty, now_ms])
        return (verdict.decode() if isinstance(verdict, bytes) else str(verdict)), int(n)

    async def take_many(self, orders: list[Order]) -> list[tuple[str, int]]:
        """The verdict for each order (`ok`, `sold_out`, `limit`, `dup`, `ended`, `not_live`,
        `missing`), checked at the time the buyer made it (`created_at`), with the units
        left after it (`ok`) or at the refusal (`sold_out`)."""
        pipe = self.redis.pipeline(transaction=False)
        for o in orders:
            assert o.sale is not None
            # with a pipeline as client, awaiting only queues the call
            await self._take(keys=self.keys(o.sale), args=[o.user, o.key, o.qty, o.created_at],
                             client=pipe)
        out = await pipe.execute()
        return [(v.decode() if isinstance(v, bytes) else str(v), int(n)) for v, n in out]

    async def give(self, sale: str, user: str, key: str, qty: int) -> None:
        await self._give(keys=self.keys(sale)[:3], args=[user, key, qty])

    async def close(self, sale: str) -> None:
        await self.redis.hset(self.keys(sale)[3], "closed", "1")

    async def claim(self, what: str) -> bool:
        """SET NX: the first node to ask wins `what` (e.g. announcing a sale's phase)."""
        return bool(await self.redis.set(f"{self.prefix}claim:{what}", b"1", nx=True,
                                         ex=self.ttl_s))

    async def build(self, sale: dict[str, Any], units: dict[str, int],
                    keys: dict[str, int]) -> bool:
        """Write the gate of one sale from PostgreSQL's numbers, unless it exists already."""
        closed = "1" if sale["phase"] in ("ended", "cancelled") else "0"
        args: list[Any] = [sale["stock_left"], sale["starts_at"], sale["ends_at"],
                           sale["per_user_limit"], closed, self.ttl_s, len(units)]
        for u, n in units.items():
            args += [u, n]
        for k, n in keys.items():
            args += [k, n]
        return bool(await self._build(keys=self.keys(sale["id"]), args=args))
