"""Member layers: each shop's thresholds, the members by layer, sales kept for one layer.

Why the members' numbers come from outside: a layer is read from what a member did (orders,
messages, votes, check-ins, answers), which the insights count (server/insights/); they are
handed in at construction as `MemberNumbers`, so this feature imports no other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from client_sdk.protocol import Code
from server.cluster.notices import Notice
from server.domain import fields
from server.domain.layers import Thresholds, layer_value, thresholds_from
from server.engagement.plumbing import Plumbing
from server.errors import SoukError
from server.store.db import Row


class MemberNumbers(Protocol):
    """A member's numbers, which the layers classify (`server.insights.Insights`)."""

    async def member_stats(self, shop: str, thresholds: Thresholds) -> list[dict[str, Any]]: ...
    async def one_member(self, shop: str, user: str, thresholds: Thresholds) -> dict[str, Any]: ...


class Layers:
    """Thresholds per shop and the layer each targeted sale admits."""

    def __init__(self, plumbing: Plumbing, numbers: MemberNumbers) -> None:
        self.p = plumbing
        self.numbers = numbers
        self.thresholds: dict[str, Thresholds] = {}
        self.sale_targets: dict[str, tuple[str, str]] = {}  # sale -> (shop, layer)

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["thresholds"]:
            self.thresholds[r["shop"]] = thresholds_from(orjson.loads(r["data"]))
        for r in rows["targets"]:
            self.sale_targets[r["sale"]] = (r["shop"], r["layer"])

    async def on_thresholds(self, n: Notice) -> None:
        self.thresholds[str(n["s"])] = thresholds_from(n["d"])

    async def on_target(self, n: Notice) -> None:
        self.sale_targets[str(n["sale"])] = (str(n["s"]), str(n["l"]))

    def thresholds_of(self, shop: str) -> Thresholds:
        return self.thresholds.get(shop, Thresholds())

    async def set_thresholds(self, shop: str, raw: Any) -> dict[str, int]:
        t = self.thresholds_of(shop).updated(raw)
        await self.p.store.save_thresholds(shop, t.to_dict())
        self.thresholds[shop] = t
        self.p.notify("thresholds", s=shop, d=t.to_dict())
        return t.to_dict()

    async def members(self, shop: str, layer: Any = None, tag: Any = None) -> list[dict[str, Any]]:
        """Every member of the shop with layer and stats; filtered by layer and/or tag."""
        want = None if layer is None else layer_value(layer)
        rows = await self.numbers.member_stats(shop, self.thresholds_of(shop))
        if want is not None:
            rows = [r for r in rows if r["layer"] == want]
        if tag is not None:
            t = fields.text({"tag": tag}, "tag", 1, 100)
            rows = [r for r in rows if t in r["tags"]]
        return rows

    async def target_sale(self, shop: str, sale: str, layer: Any) -> dict[str, Any]:
        """Restrict a flash sale to the members of one layer (e.g. a presale for high-value)."""
        lay = layer_value(layer)
        await self.p.store.target_sale(sale, shop, lay, self.p.clock_ms())
        self.sale_targets[sale] = (shop, lay)
        self.p.notify("target", sale=sale, s=shop, l=lay)
        return {"sale": sale, "layer": lay}

    async def check_sale_target(self, sale: Any, user: str) -> None:
        """Before `buy`: a targeted sale admits only its layer (checked from the records now)."""
        target = self.sale_targets.get(sale) if isinstance(sale, str) else None
        if target is None:
            return
        shop, layer = target
        row = await self.numbers.one_member(shop, user, self.thresholds_of(shop))
        if row["layer"] != layer:
            raise SoukError(Code.FORBIDDEN, f"this sale is for {layer} members", layer=layer)
