"""Products, their stock, and the field checks every commerce op relies on."""

from __future__ import annotations

from typing import Any

import pytest

from server.domain import fields
from server.domain.catalog import Catalog, new_product
from server.errors import SoukError

T0 = 1_700_000_000_000


def test_new_product_defaults_and_reserve_give_back() -> None:
    p = new_product("shop1", {"title": " Tea ", "price": 1999, "stock": 5}, "p1", T0)
    assert (p.id, p.title, p.currency, p.image, p.stock) == ("p1", "Tea", "CNY", "", 5)
    p.reserve(5)
    assert p.stock == 0
    with pytest.raises(SoukError) as info:
        p.reserve(1)
    assert info.value.code == "conflict" and info.value.extra["available"] == 0
    p.give_back(2)
    assert p.stock == 2
    assert p.to_dict()["price"] == 1999


def test_catalog_ids_unique_and_by_shop() -> None:
    c = Catalog()
    c.add(new_product("a", {"id": "x", "title": "t", "price": 1, "stock": 0}, "gen", T0))
    with pytest.raises(SoukError) as info:
        c.add(new_product("b", {"id": "x", "title": "t", "price": 1, "stock": 0}, "gen", T0))
    assert info.value.code == "conflict"
    c.add(new_product("b", {"title": "t", "price": 1, "stock": 0}, "y", T0))
    assert [p.id for p in c.of_shop("b")] == ["y"] and len(c) == 2
    with pytest.raises(SoukError) as info:
        c.require("nope")
    assert info.value.code == "not_found"
    c.discard("y")
    assert c.get("y") is None


@pytest.mark.parametrize(
    "raw",
    [
        {"title": "t", "price": 1, "stock": 1, "currency": "cny"},
        {"title": "t", "price": 1, "stock": 1, "currency": 156},
        {"title": "t", "price": 1, "stock": 1, "image": "ftp://x"},
        {"title": "t", "price": 1, "stock": 1, "image": "https://x/a b"},
        {"title": "t", "price": 1, "stock": 1, "image": "https://" + "x" * 3000},
        {"title": "t\x00", "price": 1, "stock": 1},
        {"title": "x" * 201, "price": 1, "stock": 1},
        {"title": "t", "price": 10**12, "stock": 1},
        {"title": "t", "price": 1, "stock": 1, "id": "../etc"},
        {1: "t", "price": 1, "stock": 1},
    ],
)
def test_new_product_refuses_hostile_fields(raw: dict[Any, Any]) -> None:
    with pytest.raises(SoukError) as info:
        new_product("shop1", raw, "p1", T0)
    assert info.value.code == "invalid"


def test_user_and_name_values() -> None:
    assert fields.user_value("alice@example.com") == "alice@example.com"
    assert fields.name_value(None) == ""
    for bad in ("", "x" * 129, 7, "a\tb"):
        with pytest.raises(SoukError):
            fields.user_value(bad)
    with pytest.raises(SoukError):
        fields.name_value("n" * 65)
