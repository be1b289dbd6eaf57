"""Field validation for op frames: every value from a client is hostile until checked."""

from __future__ import annotations

from client_sdk.protocol import Code, Frame
from server.domain.fields import ID_RE
from server.errors import SoukError

__all__ = ["ID_RE", "ident", "integer", "opt_ident", "room_or_group", "text"]



def ident(frame: Frame, name: str) -> str:
    """A required id (room, group, product, ...): 1-64 of [A-Za-z0-9_.:-]."""
    value = frame.get(name)
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise SoukError(Code.INVALID, f"'{name}' must be an id (1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit)")
    return value


def opt_ident(frame: Frame, name: str) -> str | None:
    return None if frame.get(name) is None else ident(frame, name)


def text(frame: Frame, name: str, max_len: int, *, required: bool = True) -> str:
    value = frame.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise SoukError(Code.INVALID, f"'{name}' must be a non-empty string of at most {max_len} characters")
    return value


def integer(frame: Frame, name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = frame.get(name, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SoukError(Code.INVALID, f"'{name}' must be an integer {lo}..{hi}")
    return value


def room_or_group(frame: Frame) -> tuple[str, str]:
    """('room', id) or ('group', id): ops that work in both take exactly one of them."""
    has_room, has_group = frame.get("room") is not None, frame.get("group") is not None
    if has_room == has_group:
        raise SoukError(Code.INVALID, "give exactly one of 'room' or 'group'")
    return ("room", ident(frame, "room")) if has_room else ("group", ident(frame, "group"))
