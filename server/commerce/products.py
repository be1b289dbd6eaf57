"""Products as this node holds them: the catalog, product writes, adoption of other nodes'.

Why a module of its own: sales and team buys both reserve stock from a product and give it
back; in a cluster a product may have been created on another node, so finding one may read
the store. Both flows go through this one owner of the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from client_sdk.protocol import Code
from server.commerce.absent import AbsentIds
from server.commerce.plumbing import new_id
from server.domain.catalog import Catalog, Product, new_product
from server.domain.flashsale import FlashSale
from server.domain.teambuy import TeamBuyOffer
from server.errors import SoukError
from server.store.db import Duplicate
from server.store.ledger import CommerceStore

log = logging.getLogger("souk.commerce")


class Products:
    """The catalog of this node, and the store behind it."""

    def __init__(
        self, store: CommerceStore, clock_ms: Callable[[], int], absent: AbsentIds
    ) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.absent = absent
        self.catalog = Catalog()

    async def create(self, shop: str, raw: Any) -> dict[str, Any]:
        now = self.clock_ms()
        product = new_product(shop, raw, new_id("p", now), now)
        self.catalog.add(product)  # refuses a known id before touching storage
        try:
            await self.store.add_product(product)
        except Duplicate:  # another node made a product with this id meanwhile
            self.catalog.discard(product.id)
            raise SoukError(Code.CONFLICT, f"product {product.id} exists") from None
        except Exception:
            self.catalog.discard(product.id)
            log.exception("product write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the product; try again") from None
        return product.to_dict()

    async def find(self, product_id: str) -> Product | None:
        """A product this node knows, or in a cluster one another node created (adopted)."""
        product = self.catalog.get(product_id)
        if product is None and self.absent.may_ask("product", product_id):
            stored = self.absent.note("product", product_id,
                                      await self.store.product(product_id))
            product = self.catalog.get(product_id)  # another task may have adopted it
            if product is None and stored is not None:
                self.catalog.add(stored)
                product = stored
        return product

    async def product_for(self, product_id: str, shop: str | None) -> Product:
        product = await self.find(product_id)
        if product is None or (shop is not None and product.shop != shop):
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        return product

    def give_back(self, sale: FlashSale | TeamBuyOffer, units: int) -> None:
        """Units back to the product as this node sees it (in a cluster the product may be one
        this node never loaded: the store keeps the true count)."""
        product = self.catalog.get(sale.product)
        if product is not None and units > 0:
            product.give_back(units)
