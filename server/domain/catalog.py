"""Products of a shop and their stock.

Why stock lives here: a flash sale or a team-buy offer reserves its units from the product when
it is created and gives back what it did not sell when it ends, so the product's `stock` is what
is still free to put on sale. Pure rules: no I/O, ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from client_sdk.protocol import Code
from server.domain import fields
from server.domain.errors import SoukError

DEFAULT_CURRENCY = "CNY"


@dataclass
class Product:
    """A product card: list price in integer cents, free stock, and its shop."""

    id: str
    shop: str
    title: str
    price: int
    currency: str
    stock: int
    image: str
    created_at: int

    def reserve(self, qty: int) -> None:
        """Take `qty` units for a sale or offer; refuse rather than go below zero."""
        if qty < 1:
            raise fields.invalid("stock", "must be at least 1")
        if qty > self.stock:
            raise SoukError(
                Code.CONFLICT,
                f"product {self.id} has {self.stock} units free, {qty} asked",
                available=self.stock,
            )
        self.stock -= qty

    def give_back(self, qty: int) -> None:
        """Return units a sale did not sell (or a reservation that was never made durable)."""
        if qty < 0:
            raise ValueError("cannot give back a negative quantity")
        self.stock += qty

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shop": self.shop,
            "title": self.title,
            "price": self.price,
            "currency": self.currency,
            "stock": self.stock,
            "image": self.image,
            "created_at": self.created_at,
        }


def new_product(shop: str, raw: Any, product_id: str, now_ms: int) -> Product:
    """Validate `product_create` fields; `product_id` is used when the client sent none."""
    f: Mapping[str, Any] = fields.mapping(raw)
    return Product(
        id=fields.ident(f, "id", default=product_id),
        shop=fields.ident_value(shop, "shop"),
        title=fields.text(f, "title", 1, fields.MAX_TITLE),
        price=fields.integer(f, "price", 1, fields.MAX_PRICE),
        currency=fields.currency(f, "currency", DEFAULT_CURRENCY),
        stock=fields.integer(f, "stock", 0, fields.MAX_STOCK),
        image=fields.url(f, "image"),
        created_at=now_ms,
    )


class Catalog:
    """Every product known to this process, by id (ids are unique across shops)."""

    def __init__(self) -> None:
        self._products: dict[str, Product] = {}

    def add(self, product: Product) -> None:
        if product.id in self._products:
            raise SoukError(Code.CONFLICT, f"product {product.id} exists")
        self._products[product.id] = product

    def discard(self, product_id: str) -> None:
        """Forget a product whose creation could not be made durable."""
        self._products.pop(product_id, None)

    def get(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def require(self, product_id: str) -> Product:
        product = self._products.get(product_id)
        if product is None:
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
        return product

    def of_shop(self, shop: str) -> list[Product]:
        return [p for p in self._products.values() if p.shop == shop]

    def __len__(self) -> int:
        return len(self._products)
