"""`flashsale`: N connected buyers rush M units; speed is measured, correctness is checked.

The verdict fails, whatever the latencies, unless: exactly min(M, demand) units were sold, no
buyer got more than the per-user limit, every attempt got an answer, a replayed idempotency
key returned the same order, and the room saw the stock reach zero.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any, ClassVar

from client_sdk.protocol import Code, Frame, Op
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat
from loadtest.scenarios.buyers import connect_actors, object_id
from loadtest.schedule import OpenLoop, spike
from loadtest.session import RequestError, Session

ANSWERS = {Code.SOLD_OUT, Code.LIMIT_REACHED, Code.NOT_LIVE, Code.ENDED}


class StockWatch:
    """Follows `sale` events in the room: when did the stock reach zero?"""

    def __init__(self) -> None:
        self.zero_at: dict[str, int] = {}
        self.events = 0
        self.changed = asyncio.Event()

    def __call__(self, ev: Frame, now: int) -> None:
        if ev.get("type") == "sale":
            self.events += 1
            if ev.get("stock_left") == 0 or ev.get("phase") == "sold_out":
                self.zero_at.setdefault(str(ev.get("id")), now)
                self.changed.set()

    async def wait_zero(self, sale_id: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while sale_id not in self.zero_at:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return sale_id in self.zero_at
        return True


async def create_sale(ctx: RunContext, streamer: Session, units: int, limit: int, duration_s: int) -> Any:
    cfg = ctx.config
    product = await streamer.request(
        Op.PRODUCT_CREATE, title=f"load-test product {cfg.run_id}", price=9900, stock=units * 2,
    )
    product_id = object_id(product, "product")
    sale = await streamer.request(
        Op.SALE_CREATE, room=cfg.room, product=product_id, price=4900, stock=units,
        duration_s=duration_s, per_user_limit=limit,
    )
    return object_id(sale, "sale")


async def rush(
    ctx: RunContext, buyers: list[Session], sale_id: Any, attempts: int, window_s: float
) -> tuple[Counter[int], dict[int, tuple[str, Any]]]:
    """Every buyer sends `attempts` buys within `window_s` (open loop); returns units per buyer."""
    units: Counter[int] = Counter()
    first_order: dict[int, tuple[str, Any]] = {}
    n = len(buyers)

    async def buy(i: int, scheduled_ns: int) -> None:
        b = i // attempts  # a buyer's attempts are adjacent: the second one meets the limit
        key = uuid.uuid4().hex
        try:
            reply = await buyers[b].request(Op.BUY, timeout_s=ctx.config.event_timeout_s,
                                            sale=sale_id, qty=1, key=key)
        except RequestError as exc:
            now = time.monotonic_ns()
            if exc.code in ANSWERS:
                ctx.metrics.record("buy", now - scheduled_ns, now)
                ctx.metrics.count(f"buy_{exc.code}")
            else:
                ctx.metrics.error("buy", exc.code, now)
            return
        except TimeoutError:
            ctx.metrics.timeout("buy")
            return
        except Exception as exc:
            ctx.metrics.error("buy", type(exc).__name__)
            return
        now = time.monotonic_ns()
        ctx.metrics.record("buy", now - scheduled_ns, now)
        order = reply.get("order")
        qty = order.get("qty", 1) if isinstance(order, dict) else 1
        units[b] += int(qty) if isinstance(qty, int) else 1
        ctx.metrics.count("units_sold", int(qty) if isinstance(qty, int) else 1)
        first_order.setdefault(b, (key, object_id(reply, "order")))

    await OpenLoop(spike(n * attempts, window_s), buy, ctx.metrics, failure_metric="buy").run()
    return units, first_order


async def check_sale(
    ctx: RunContext, buyers: list[Session], sale_id: Any, units: Counter[int],
    first_order: dict[int, tuple[str, Any]], stock: int, limit: int, attempts: int,
    watch: StockWatch,
) -> None:
    sold = sum(units.values())
    demand = len(buyers) * min(attempts, limit)
    want = min(stock, demand)
    ctx.check("exactly the expected units sold", sold == want, f"sold {sold}, expected {want}")
    over = [b for b, q in units.items() if q > limit]
    ctx.check("no buyer over the per-user limit", not over, f"{len(over)} buyers above {limit}")
    s = ctx.metrics.summary("buy")
    ctx.check("every buyer answered", s.timeouts == 0 and s.attempts == len(buyers) * attempts,
              f"{s.attempts} answers/failures for {len(buyers) * attempts} attempts, {s.timeouts} timeouts")
    if first_order:
        b, (key, order_id) = next(iter(first_order.items()))
        try:
            again = await buyers[b].request(Op.BUY, sale=sale_id, qty=1, key=key)
            same = object_id(again, "order") == order_id
            ctx.check("idempotency key replays the same order", same,
                      f"first {order_id}, replay {object_id(again, 'order')}")
        except RequestError as exc:
            ctx.check("idempotency key replays the same order", False, f"replay refused: {exc.code}")
    if sold == stock:
        seen = await watch.wait_zero(str(sale_id), ctx.config.event_timeout_s)
        ctx.check("the room saw the stock reach zero", seen,
                  f"{watch.events} sale events seen")


class FlashSaleScenario(Scenario):
    name = "flashsale"
    summary = "N buyers rush M units (knobs buyers, units, limit, attempts, window_s)"
    metrics = ("join", "buy")
    default_slos: ClassVar[tuple[str, ...]] = ("buy.p99<600ms",)
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 10, "rate": 100, "duration_s": 1, "probes": 2, "buyers": 40,
                  "units": 30, "limit": 1, "attempts": 2, "window_s": 0.5},
        "full": {"viewers": 2000, "rate": 500, "duration_s": 5, "probes": 10, "buyers": 5000,
                 "units": 100, "limit": 1, "attempts": 2, "window_s": 1.0, "workers": 2},
    }

    def actor_sockets(self, config: object) -> int:
        return int(getattr(config, "extra", {}).get("buyers", 40)) + 2

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        n_buyers = int(ctx.knob("buyers", 40))
        units = int(ctx.knob("units", 10))
        limit = int(ctx.knob("limit", 1))
        attempts = int(ctx.knob("attempts", 2))
        watch = StockWatch()
        streamer = await ctx.session("streamer", 0, on_event=watch)
        await streamer.request(Op.JOIN, room=cfg.room)
        pool = await seat(ctx, cfg.viewers, cfg.probes, cfg.rate)
        ctx.phase = f"connecting {n_buyers} buyers"
        buyers = await connect_actors(ctx, n_buyers, cfg.rate, first_index=2_000_000)
        ctx.phase = f"sale: {len(buyers)} buyers rush {units} units"
        sale_id = await create_sale(ctx, streamer, units, limit, duration_s=max(30, int(cfg.duration_s) + 30))
        sold, first = await rush(ctx, buyers, sale_id, attempts, ctx.knob("window_s", 0.5))
        await check_sale(ctx, buyers, sale_id, sold, first, units, limit, attempts, watch)
        ctx.check("every buyer connected", len(buyers) == n_buyers, f"{len(buyers)} of {n_buyers}")
        await asyncio.sleep(min(cfg.duration_s, 1.0))
        await ctx.finish_crowd(pool, {})
