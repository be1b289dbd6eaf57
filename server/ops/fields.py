"""Field validation for op frames: every value from a client is hostile until checked.

Ids and integers follow the domain's rules (server/domain/fields.py), so a room id or a
quantity is judged the same wherever it arrives; `text` stays here because chat keeps the
text exactly as typed (newlines included), where the domain's `text` strips and refuses
control characters.
"""

from __future__ import annotations

from client_sdk.protocol import Code, Frame
from server.domain import fields as domain_fields
from server.domain.fields import ID_RE
from server.errors import SoukError

__all__ = ["ID_RE", "ident", "integer", "opt_ident", "room_or_group", "text"]



def ident(frame: Frame, name: str) -> str:
    """A required id (room, group, product, ...)."""
    return domain_fields.ident_value(frame.get(name), name)


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
    return domain_fields.integer(frame, name, lo, hi, default)


def room_or_group(frame: Frame) -> tuple[str, str]:
    """('room', id) or ('group', id): ops that work in both take exactly one of them."""
    has_room, has_group = frame.get("room") is not None, frame.get("group") is not None
    if has_room == has_group:
        raise SoukError(Code.INVALID, "give exactly one of 'room' or 'group'")
    return ("room", ident(frame, "room")) if has_room else ("group", ident(frame, "group"))
