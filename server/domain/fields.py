"""Field checks for hostile input: every value a client sends is typed and bounded here.

Why one module: every op validates the same kinds of values (ids, money, counts, keys, URLs);
doing it in one place keeps the refusals uniform (`SoukError(Code.INVALID, ...)` naming the field)
and makes sure `True` is never taken for `1` nor a float for money.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain.errors import SoukError

MAX_ID: Final = 64
MAX_KEY: Final = 64
MAX_TITLE: Final = 200
MAX_URL: Final = 2048
MAX_PRICE: Final = 100_000_000_00  # 100 million in the major unit: far above any real item
MAX_STOCK: Final = 1_000_000
MAX_NAME: Final = 64

ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # the one id rule (ops reuse it)
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_MISSING: Final = object()


def invalid(name: str, why: str) -> SoukError:
    """The refusal for one bad field; `field` travels in the error frame for clients."""
    return SoukError(Code.INVALID, f"{name}: {why}", field=name)


def mapping(value: Any, name: str = "fields") -> Mapping[str, Any]:
    """The op's fields must be a map with string keys (msgpack can carry other keys)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise invalid(name, "must be a map")
    return value


def integer(
    fields: Mapping[str, Any], name: str, lo: int, hi: int, default: int | None = None
) -> int:
    """An int within [lo, hi]; bools and floats are refused (1.0 is not a quantity)."""
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is None:
            raise invalid(name, "is required")
        return default
    if type(value) is not int:
        raise invalid(name, "must be an integer")
    if not lo <= value <= hi:
        raise invalid(name, f"must be between {lo} and {hi}")
    return value


def optional_integer(fields: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    """Like `integer`, but absence (or null) means None."""
    if fields.get(name) is None:
        return None
    return integer(fields, name, lo, hi)


def text(fields: Mapping[str, Any], name: str, lo: int, hi: int, default: str | None = None) -> str:
    """A string of lo..hi characters, stripped of surrounding blanks, no control characters."""
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is None:
            raise invalid(name, "is required")
        return default
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    value = value.strip()
    if not lo <= len(value) <= hi:
        raise invalid(name, f"must be {lo} to {hi} characters")
    if _CONTROL_RE.search(value):
        raise invalid(name, "must not contain control characters")
    return value


def ident_value(value: Any, name: str) -> str:
    """An id as the protocol carries it: 1-64 of letters, digits and `_ . : -`."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise invalid(name, "must be an id of 1-64 letters, digits, '_', '.', ':' or '-'")
    return value


def ident(fields: Mapping[str, Any], name: str, default: str | None = None) -> str:
    """A required (or defaulted) id field."""
    value = fields.get(name)
    if value is None:
        if default is None:
            raise invalid(name, "is required")
        return default
    return ident_value(value, name)


def key_value(value: Any, name: str = "key") -> str:
    """An idempotency key: any printable string of 1-64 characters chosen by the client."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY:
        raise invalid(name, f"must be a string of 1 to {MAX_KEY} characters")
    if _CONTROL_RE.search(value):
        raise invalid(name, "must not contain control characters")
    return value


def url(fields: Mapping[str, Any], name: str) -> str:
    """An optional http(s) URL (an image); empty string when absent."""
    value = fields.get(name)
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise invalid(name, f"must be a URL of at most {MAX_URL} characters")
    if not (value.startswith("https://") or value.startswith("http://") or value.startswith("/")):
        raise invalid(name, "must be an http(s) URL or a path")
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise invalid(name, "must not contain blanks or control characters")
    return value


def currency(fields: Mapping[str, Any], name: str, default: str) -> str:
    """An ISO 4217 code such as CNY or USD."""
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or not _CURRENCY_RE.fullmatch(value):
        raise invalid(name, "must be a three-letter currency code such as CNY")
    return value


def user_value(value: Any, name: str = "user") -> str:
    """A user id as the token's `sub` carries it: printable, 1-128 characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise invalid(name, "must be a string of 1 to 128 characters")
    if _CONTROL_RE.search(value):
        raise invalid(name, "must not contain control characters")
    return value


def name_value(value: Any, name: str = "name") -> str:
    """A display name: printable, at most 64 characters (empty allowed)."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise invalid(name, f"must be a string of at most {MAX_NAME} characters")
    if _CONTROL_RE.search(value):
        raise invalid(name, "must not contain control characters")
    return value
